include $(sort $(wildcard $(BR2_EXTERNAL_IRQLAB_PATH)/package/*/*.mk))

# Kconfig silently drops fragment lines it cannot honour (unknown option,
# unmet dependency, no prompt and nothing selects it). Check the final
# .config right after the kernel is configured, before hours are spent on
# an image that lacks what the tests need.
ifeq ($(BR2_IRQLAB_CHECK_KERNEL_FRAGMENTS),y)
define IRQLAB_CHECK_KERNEL_FRAGMENTS
	$(BR2_EXTERNAL_IRQLAB_PATH)/board/irqlab/check-kernel-fragment.sh \
		$(LINUX_DIR)/.config $(LINUX_KCONFIG_FRAGMENT_FILES)
endef
LINUX_POST_CONFIGURE_HOOKS += IRQLAB_CHECK_KERNEL_FRAGMENTS
endif
