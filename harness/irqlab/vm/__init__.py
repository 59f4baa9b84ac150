"""Running a VM: QEMU machine, QMP, qtest, serial console, SSH, the guest and its agent."""
