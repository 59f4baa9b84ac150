################################################################################
#
# irqlab-kmod
#
################################################################################

# The module lives in guest-kmod/ of the repository this tree belongs to and
# includes the register map from ../qemu-device/irqlab-regs.h, so the site is
# the repository root and rsync copies just those two parts, keeping their
# relative layout (and leaving out in-tree build products).
IRQLAB_KMOD_SITE = $(BR2_EXTERNAL_IRQLAB_PATH)/..
IRQLAB_KMOD_SITE_METHOD = local
IRQLAB_KMOD_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude='*.o' --exclude='*.ko' --exclude='*.mod' --exclude='*.mod.c' \
	--exclude='.*.cmd' --exclude=Module.symvers --exclude=modules.order \
	--include=/guest-kmod/*** \
	--include=/qemu-device/ --include=/qemu-device/irqlab-regs.h \
	--exclude='*'
IRQLAB_KMOD_LICENSE = GPL-2.0
IRQLAB_KMOD_MODULE_SUBDIRS = guest-kmod

# The native responder (guest-kmod/responder/, issue 15): a static program the
# guest agent starts for the latency hot path; it includes the uapi header and
# the register map, like the module.  The agent finds it in /usr/bin.
IRQLAB_KMOD_RESPONDER_CFLAGS = $(TARGET_CFLAGS) -Wall -Wextra -static \
	-I$(@D)/guest-kmod/include/uapi -I$(@D)/qemu-device

define IRQLAB_KMOD_BUILD_CMDS
	$(TARGET_CC) $(IRQLAB_KMOD_RESPONDER_CFLAGS) $(TARGET_LDFLAGS) \
		-o $(@D)/irqlab-respond $(@D)/guest-kmod/responder/irqlab-respond.c
endef

define IRQLAB_KMOD_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/irqlab-respond $(TARGET_DIR)/usr/bin/irqlab-respond
endef

$(eval $(kernel-module))
$(eval $(generic-package))
