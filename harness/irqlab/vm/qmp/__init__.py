"""QMP access: a synchronous client over qemu.qmp, and the typed irqlab injector."""
