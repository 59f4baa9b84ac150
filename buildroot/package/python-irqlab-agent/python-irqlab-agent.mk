################################################################################
#
# python-irqlab-agent
#
################################################################################

# The agent is harness/irqlab_agent/ of the repository this tree belongs to.
# It has no setup of its own (the repository's pyproject.toml builds the host
# harness, with host-only dependencies), so it is installed like the Debian
# image does it: the package directory copied into site-packages, plus the
# uapi header parser and the header it parses, so that the event record and
# ioctl numbers are read from guest-kmod/include/uapi/linux/irqlab.h and never
# retyped. Buildroot byte-compiles site-packages when it finalizes the target.
PYTHON_IRQLAB_AGENT_SITE = $(BR2_EXTERNAL_IRQLAB_PATH)/..
PYTHON_IRQLAB_AGENT_SITE_METHOD = local
PYTHON_IRQLAB_AGENT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude=__pycache__ --exclude='*.pyc' \
	--include=/harness/ --include=/harness/irqlab_agent/*** \
	--include=/harness/irqlab/ --include=/harness/irqlab/contract/ \
	--include=/harness/irqlab/contract/uapi.py \
	--include=/guest-kmod/ --include=/guest-kmod/include/ \
	--include=/guest-kmod/include/uapi/ --include=/guest-kmod/include/uapi/linux/ \
	--include=/guest-kmod/include/uapi/linux/irqlab.h \
	--exclude='*'
PYTHON_IRQLAB_AGENT_LICENSE = GPL-2.0+
PYTHON_IRQLAB_AGENT_DEPENDENCIES = python3

PYTHON_IRQLAB_AGENT_DEST = \
	$(TARGET_DIR)/usr/lib/python$(PYTHON3_VERSION_MAJOR)/site-packages/irqlab_agent

define PYTHON_IRQLAB_AGENT_INSTALL_TARGET_CMDS
	rm -rf $(PYTHON_IRQLAB_AGENT_DEST)
	mkdir -p $(PYTHON_IRQLAB_AGENT_DEST)
	cp -R $(@D)/harness/irqlab_agent/. $(PYTHON_IRQLAB_AGENT_DEST)/
	$(INSTALL) -m 0644 $(@D)/harness/irqlab/contract/uapi.py \
		$(PYTHON_IRQLAB_AGENT_DEST)/_uapi.py
	$(INSTALL) -m 0644 $(@D)/guest-kmod/include/uapi/linux/irqlab.h \
		$(PYTHON_IRQLAB_AGENT_DEST)/irqlab.h
endef

$(eval $(generic-package))
