################################################################################
#
# python-irqlab-agent
#
################################################################################

# The agent is harness/irqlab_agent/ of the repository this tree belongs to.
# It has no setup of its own (the repository's pyproject.toml builds the host
# harness, with host-only dependencies), so it is installed like the Debian
# image does it: the package directory copied into site-packages, plus abi.json,
# the ABI artifact the agent reads (event record layout with field offsets, ioctl
# numbers), generated from guest-kmod/include/uapi/linux/irqlab.h by the host
# harness's header parser (irqlab.contract.uapi, stdlib only, run with the host
# Python) so nothing is retyped. Buildroot byte-compiles site-packages when it
# finalizes the target.
PYTHON_IRQLAB_AGENT_SITE = $(BR2_EXTERNAL_IRQLAB_PATH)/..
PYTHON_IRQLAB_AGENT_SITE_METHOD = local
PYTHON_IRQLAB_AGENT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude=__pycache__ --exclude='*.pyc' \
	--include=/harness/ --include=/harness/irqlab_agent/*** \
	--include=/harness/irqlab/ --include=/harness/irqlab/__init__.py \
	--include=/harness/irqlab/errors.py --include=/harness/irqlab/contract/ \
	--include=/harness/irqlab/contract/__init__.py \
	--include=/harness/irqlab/contract/cheader.py \
	--include=/harness/irqlab/contract/uapi.py \
	--include=/guest-kmod/ --include=/guest-kmod/include/ \
	--include=/guest-kmod/include/uapi/ --include=/guest-kmod/include/uapi/linux/ \
	--include=/guest-kmod/include/uapi/linux/irqlab.h \
	--exclude='*'
PYTHON_IRQLAB_AGENT_LICENSE = GPL-2.0+
PYTHON_IRQLAB_AGENT_DEPENDENCIES = host-python3 python3

PYTHON_IRQLAB_AGENT_DEST = \
	$(TARGET_DIR)/usr/lib/python$(PYTHON3_VERSION_MAJOR)/site-packages/irqlab_agent

define PYTHON_IRQLAB_AGENT_INSTALL_TARGET_CMDS
	rm -rf $(PYTHON_IRQLAB_AGENT_DEST)
	mkdir -p $(PYTHON_IRQLAB_AGENT_DEST)
	cp -R $(@D)/harness/irqlab_agent/. $(PYTHON_IRQLAB_AGENT_DEST)/
	PYTHONPATH=$(@D)/harness $(HOST_DIR)/bin/python3 -m irqlab.contract.uapi \
		$(@D)/guest-kmod/include/uapi/linux/irqlab.h \
		> $(PYTHON_IRQLAB_AGENT_DEST)/abi.json
endef

$(eval $(generic-package))
