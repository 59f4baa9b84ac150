"""irqlab host harness: build QEMU and the guest, run them, inject interrupts, assert."""

__version__ = "0.1.0"
