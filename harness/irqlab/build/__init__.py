"""Build recipes (QEMU with the irqlab device, guest image), cached by input hash."""
