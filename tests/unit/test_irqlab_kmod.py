"""Bring your own module, without a VM: IRQLAB_KMOD is checked before anything boots,
and the guest's new configuration fields are validated."""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from irqlab.build.arch import AARCH64, X86_64, Arch, build_module_command
from irqlab.build.elf import modinfo, module_parameters
from irqlab.vm.guest import (
    Guest,
    GuestConfig,
    GuestConfigError,
    PrerequisiteMissing,
    check_module_arch,
    check_module_params,
    find_kmod,
    irqlab_device_alias,
    ko_module_name,
)


def _fake_ko(
    path: Path, name: str, machine: int = X86_64.elf_machine, params: Sequence[str] = ()
) -> Path:
    """A 64-bit little-endian ELF (e_machine *machine*) with a .modinfo section: a license,
    *params* (``parm=``/``parmtype=`` entries as the kernel's macros write them), *name*."""
    modinfo = b"".join(f"{e}\0".encode() for e in ("license=GPL", *params, f"name={name}"))
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    shoff = 64 + len(modinfo) + len(shstrtab)

    def section(name_at: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name_at, 1, 0, 0, offset, size, 0, 0, 1, 0)

    head = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HHI", 1, machine, 1)
    head = head.ljust(0x28, b"\0") + struct.pack("<QIHHHHHH", shoff, 0, 64, 0, 0, 64, 3, 2)
    sections = bytes(64) + section(1, 64, len(modinfo)) + section(10, 64 + len(modinfo), 20)
    path.write_bytes(head + modinfo + shstrtab + sections)
    return path


IRQLAB_PARAMS = (
    "parm=uio:UIO mode",
    "parmtype=uio:bool",
    "parm=gpio_edges:GPIO lines to arm",
    "parmtype=gpio_edges:uint",
    "parm=wakeup:where readers are woken",  # module_param_cb: a description, no type
)


def test_module_name_from_modinfo(tmp_path: Path) -> None:
    assert ko_module_name(_fake_ko(tmp_path / "a.ko", "mydrv").read_bytes()) == "mydrv"
    assert ko_module_name(b"no modinfo here") is None


def test_irqlab_kmod_of_another_module_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_KMOD", str(_fake_ko(tmp_path / "mydrv.ko", "mydrv")))
    t0 = time.monotonic()
    with pytest.raises(PrerequisiteMissing, match=r"module 'mydrv', not a build of the irqlab"):
        find_kmod()
    assert time.monotonic() - t0 < 1.0
    monkeypatch.setenv("IRQLAB_KMOD", str(_fake_ko(tmp_path / "irqlab.ko", "irqlab")))
    assert find_kmod() == tmp_path / "irqlab.ko"


def test_irqlab_kmod_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRQLAB_KMOD", str(tmp_path / "nope.ko"))
    with pytest.raises(PrerequisiteMissing, match="does not exist"):
        find_kmod()


def test_module_of_another_architecture_is_refused_with_the_way_to_build_it(
    tmp_path: Path,
) -> None:
    arm = _fake_ko(tmp_path / "mydrv.ko", "mydrv", AARCH64.elf_machine)
    check_module_arch(arm, AARCH64, "extra module")
    with pytest.raises(PrerequisiteMissing) as e:
        check_module_arch(arm, X86_64, "extra module")
    assert "is built for aarch64, but the guest is x86_64" in str(e.value)
    assert build_module_command("x86_64") in str(e.value)
    odd = _fake_ko(tmp_path / "odd.ko", "odd", 0x2B)  # EM_SPARCV9
    with pytest.raises(PrerequisiteMissing, match="built for ELF machine 43"):
        check_module_arch(odd, AARCH64, "extra module")
    (tmp_path / "text.ko").write_text("not a module")
    with pytest.raises(PrerequisiteMissing, match="is not a kernel module: not an ELF file"):
        check_module_arch(tmp_path / "text.ko", X86_64, "extra module")


def test_irqlab_kmod_of_another_architecture_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ko = _fake_ko(tmp_path / "irqlab.ko", "irqlab", AARCH64.elf_machine)
    monkeypatch.setenv("IRQLAB_KMOD", str(ko))
    with pytest.raises(PrerequisiteMissing, match=r"\$IRQLAB_KMOD .* is built for aarch64"):
        find_kmod()
    assert find_kmod(AARCH64) == ko


@pytest.mark.parametrize(("arch", "other"), [(X86_64, AARCH64), (AARCH64, X86_64)])
def test_extra_module_of_another_architecture_fails_before_any_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arch: Arch, other: Arch
) -> None:
    monkeypatch.delenv("IRQLAB_KMOD", raising=False)
    ko = _fake_ko(tmp_path / "mydrv.ko", "mydrv", other.elf_machine)
    guest = Guest(GuestConfig(arch=arch.name, extra_modules=[ko]))
    t0 = time.monotonic()
    with pytest.raises(PrerequisiteMissing, match=f"built for {other.name}, but the guest is"):
        guest.find_prerequisites()
    assert time.monotonic() - t0 < 1.0


def test_the_module_recipe_builds_for_the_asked_architecture(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without $IRQLAB_KMOD, find_kmod(arch) builds against that architecture's kernel
    (the recipes themselves are faked: the boundary here is which kernel they get)."""
    from irqlab.build import kernel, kmod

    monkeypatch.delenv("IRQLAB_KMOD", raising=False)
    asked: list[object] = []
    monkeypatch.setattr(kernel, "ensure_kernel", lambda *a, arch=None, **k: f"kernel-{arch.name}")
    monkeypatch.setattr(
        kmod, "ensure_kmod", lambda *a, kernel=None, **k: asked.append(kernel) or "/x.ko"
    )
    assert find_kmod(AARCH64) == Path("/x.ko")
    assert find_kmod() == Path("/x.ko")
    assert asked == ["kernel-aarch64", None]  # x86_64: the recipe's default kernel


def test_a_missing_module_is_not_found_not_a_non_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PrerequisiteMissing) as e:
        check_module_arch(Path("mydrv.ko"), X86_64, "extra module")
    assert str(e.value) == f"extra module not found: {tmp_path / 'mydrv.ko'}"
    with pytest.raises(PrerequisiteMissing) as e:  # the CLI's and the marker's spelling
        check_module_arch(Path("mydrv.ko tag=x"), X86_64, "extra module")
    assert str(e.value).endswith("parameters go in GuestConfig(extra_module_params={name: {...}}))")


def test_modinfo_and_parameters_from_the_section(tmp_path: Path) -> None:
    data = _fake_ko(tmp_path / "irqlab.ko", "irqlab", params=IRQLAB_PARAMS).read_bytes()
    assert modinfo(data)[0] == ("license", "GPL") and modinfo(data)[-1] == ("name", "irqlab")
    assert module_parameters(data) == {"uio": "bool", "gpio_edges": "uint", "wakeup": ""}
    assert module_parameters(_fake_ko(tmp_path / "p.ko", "p").read_bytes()) == {}


def test_unknown_module_parameters_are_refused_naming_the_valid_ones(tmp_path: Path) -> None:
    ko = _fake_ko(tmp_path / "irqlab.ko", "irqlab", params=IRQLAB_PARAMS)
    check_module_params(ko, {"uio": 1, "wakeup": "thread"})
    check_module_params(ko, {})
    # what the kernel takes too: - for _ in a name, and every module's own two
    check_module_params(ko, {"gpio-edges": 8, "dyndbg": "+p", "async_probe": 1})
    with pytest.raises(GuestConfigError) as e:
        check_module_params(ko, {"nosuch": 1, "uio": 1, "other": 2})
    assert str(e.value) == (
        "unknown parameters of irqlab.ko: nosuch, other; its parameters are: "
        "gpio_edges (uint), uio (bool), wakeup"
    )


def test_your_modules_parameter_given_to_our_driver_says_where_it_goes(tmp_path: Path) -> None:
    """``--module mydrv.ko --module-param tag=x`` said only that irqlab.ko has no tag."""
    ours = _fake_ko(tmp_path / "irqlab.ko", "irqlab", params=IRQLAB_PARAMS)
    mine = _fake_ko(tmp_path / "mydrv.ko", "mydrv", params=("parmtype=tag:charp",))
    g = Guest(GuestConfig(module_params={"tag": "x"}, extra_modules=[mine]))
    with pytest.raises(GuestConfigError) as e:
        g._check_driver_params(ours)
    first, hint = str(e.value).split("\n")
    assert first.startswith("unknown parameter of irqlab.ko: tag; its parameters are: ")
    assert hint.startswith("(tag: a parameter of mydrv.ko, your module: ")
    assert "--module 'mydrv.ko tag=...'" in hint and "modules=['mydrv.ko tag=...']" in hint
    g = Guest(GuestConfig(module_params={"nosuch": 1}, extra_modules=[mine]))
    with pytest.raises(GuestConfigError) as e:
        g._check_driver_params(ours)
    assert "\n" not in str(e.value), "no hint for a name nobody declares"


def test_a_bare_parameter_sets_a_bool_and_only_a_bool(tmp_path: Path) -> None:
    """insmod mydrv.ko verbose sets a bool parameter: it was refused as not PARAM=VALUE."""
    from irqlab.vm.guest import kernel_param, parse_module_spec

    spec = parse_module_spec("mydrv.ko verbose tag=x")
    assert spec == ("mydrv.ko", {"verbose": None, "tag": "x"})
    assert kernel_param("verbose", None) == "verbose"
    ko = _fake_ko(tmp_path / "irqlab.ko", "irqlab", params=IRQLAB_PARAMS)
    check_module_params(ko, {"uio": None, "wakeup": None})  # bool; no type declared
    with pytest.raises(GuestConfigError) as e:
        check_module_params(ko, {"gpio_edges": None})
    assert str(e.value) == (
        "parameter gpio_edges of irqlab.ko (uint) needs a value: gpio_edges=VALUE "
        "(a bare name sets a bool parameter only)"
    )
    assert Guest(GuestConfig(module_params={"uio": None})).driver_node() == "/dev/uio0"
    assert Guest(GuestConfig(module_params={"uio": "0"})).driver_node() == "/dev/irqlab0"
    # the kernel's kstrtobool: uio=on or uio=true loaded UIO mode while the harness
    # waited for /dev/irqlab0
    for on in (1, True, "1", "y", "Y", "true", "on", "ON"):
        assert Guest(GuestConfig(module_params={"uio": on})).driver_node() == "/dev/uio0", on
    for off in (0, False, "0", "n", "false", "off", ""):
        assert Guest(GuestConfig(module_params={"uio": off})).driver_node() == "/dev/irqlab0"


def test_module_parameters_are_checked_before_the_image_or_a_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GuestConfig(module_params={"nosuch": 1}) fails in prepare(): no image is built,
    no QEMU started, no snapshot saved."""
    import irqlab.build.image

    ko = _fake_ko(tmp_path / "irqlab.ko", "irqlab", params=IRQLAB_PARAMS)
    monkeypatch.setenv("IRQLAB_KMOD", str(ko))
    monkeypatch.delenv("IRQLAB_IMAGE", raising=False)
    monkeypatch.delenv("IRQLAB_ARCH", raising=False)
    monkeypatch.setattr(Guest, "_find_qemu", staticmethod(lambda arch: object()))

    def no_image(**kw: object) -> None:
        raise AssertionError("the image was asked for")

    monkeypatch.setattr(irqlab.build.image, "ensure_image", no_image)
    with pytest.raises(GuestConfigError, match=r"unknown parameter of irqlab\.ko: nosuch;"):
        Guest(GuestConfig(module_params={"nosuch": 1})).start()


def test_the_image_ships_what_the_extra_modules_depend_on_but_each_other(
    tmp_path: Path,
) -> None:
    """An extra module's depends= names modules of the guest kernel (shipped in the image)
    or another extra module (loaded from the list, not shipped)."""
    lib = _fake_ko(tmp_path / "my-lib.ko", "my_lib", params=("depends=crc-itu-t",))
    drv = _fake_ko(tmp_path / "mydrv.ko", "mydrv", params=("depends=my_lib,crc7,crc-itu-t",))
    config = GuestConfig(extra_modules=[lib, drv], kernel_modules=("uio_pci_generic",))
    assert Guest(config).kernel_modules() == ("uio_pci_generic", "crc-itu-t", "crc7")
    assert Guest(GuestConfig()).kernel_modules() == ()


def test_extra_module_params_name_a_module_and_its_parameters(tmp_path: Path) -> None:
    drv = _fake_ko(
        tmp_path / "my-drv.ko", "my_drv", params=("parm=tag:a tag", "parmtype=tag:charp")
    )
    ok = Guest(GuestConfig(extra_modules=[drv], extra_module_params={"my-drv": {"tag": "x"}}))
    ok._check_extra_module_params()
    assert ok._extra_module_args(drv) == " tag=x"
    with pytest.raises(GuestConfigError, match=r"'other' is none of the extra modules \(my_drv\)"):
        Guest(
            GuestConfig(extra_modules=[drv], extra_module_params={"other": {"tag": "x"}})
        )._check_extra_module_params()
    with pytest.raises(GuestConfigError, match=r"unknown parameter of my-drv\.ko: nope"):
        Guest(
            GuestConfig(extra_modules=[drv], extra_module_params={"my_drv": {"nope": 1}})
        )._check_extra_module_params()


def test_extra_modules_come_after_those_they_need(tmp_path: Path) -> None:
    lib = _fake_ko(tmp_path / "my-lib.ko", "my_lib")
    drv = _fake_ko(tmp_path / "mydrv.ko", "mydrv", params=("depends=my_lib,crc7",))
    Guest(GuestConfig(extra_modules=[lib, drv]))._check_extra_module_params()
    with pytest.raises(GuestConfigError, match=r"mydrv\.ko needs my-lib\.ko: list it before"):
        Guest(GuestConfig(extra_modules=[drv, lib]))._check_extra_module_params()
    with pytest.raises(GuestConfigError, match="a module my_lib is listed twice"):
        Guest(GuestConfig(extra_modules=[lib, lib]))._check_extra_module_params()


def test_kernel_params_reach_the_kernel_whole() -> None:
    """BusyBox's insmod joins its arguments with blanks and the kernel splits there:
    a value with a blank goes in the kernel's double quotes."""
    from irqlab.vm.guest import kernel_param

    assert kernel_param("tag", "x") == "tag=x"
    assert kernel_param("tag", "a b") == "'tag=\"a b\"'"
    assert kernel_param("n", 7) == "n=7"
    with pytest.raises(GuestConfigError, match="double quote"):
        kernel_param("tag", 'say "hi"')


def test_irqlab_kmod_that_is_no_module_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/etc/passwd was "the module None, not a build of the irqlab driver"."""
    (tmp_path / "text").write_text("root:x:0:0\n")
    monkeypatch.setenv("IRQLAB_KMOD", str(tmp_path / "text"))
    with pytest.raises(PrerequisiteMissing, match=r"text is not a kernel module: not an ELF file"):
        find_kmod()


def test_reset_knows_the_driver_loaded_with_the_configured_parameters() -> None:
    """Guest.reset() reloads our driver when a test reloaded it with other parameters;
    the comparison is the kernel's: 64 and "64" are one value, order does not matter."""
    from irqlab.vm.guest import Guest, GuestConfig

    g = Guest(GuestConfig(module_params={"ring_size": 64, "wakeup": "thread"}))
    assert not g._loaded_as(g.config.module_params)  # not loaded through it
    g._loaded_params = {"wakeup": "thread", "ring_size": "64"}
    assert g._loaded_as(g.config.module_params)
    g._loaded_params = {"wakeup": "workqueue", "ring_size": 64}
    assert not g._loaded_as(g.config.module_params)
    g._loaded_params = {"ring_size": 64}  # wakeup back to the driver's default
    assert not g._loaded_as(g.config.module_params)


TYPED_PARAMS = tuple(
    f"parmtype={name}:{kind}"
    for name, kind in (
        ("count", "int"),
        ("mask", "uint"),
        ("small", "byte"),
        ("delta", "short"),
        ("big", "ulong"),
        ("on", "bool"),
        ("off", "invbool"),
        ("tag", "charp"),
        ("list", "array of int"),
    )
)


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"count": "abc"}, "count of mydrv.ko (int): 'abc' is not an integer (decimal, 0x hex"),
        ({"mask": -1}, "mask of mydrv.ko (uint): '-1' is not an unsigned integer"),
        ({"mask": 2**32}, "mask of mydrv.ko (uint): 4294967296 is out of range for uint "),
        ({"small": 256}, "(byte): 256 is out of range for byte (0 to 255)"),
        ({"delta": "-32769"}, "(short): -32769 is out of range for short (-32768 to 32767)"),
        ({"count": "08"}, "(int): '08' is not an integer"),  # 0: octal
        ({"count": "0x"}, "(int): '0x' is not an integer"),
        ({"count": True}, "(int): 'True' is not an integer"),
        ({"count": 1.5}, "(int): '1.5' is not an integer"),
        ({"on": "maybe"}, "on of mydrv.ko (bool): 'maybe' is not a bool (the kernel takes 1, y"),
        ({"off": ""}, "(invbool): '' is not a bool"),
        ({"list": "1,x,3"}, "list of mydrv.ko (array of int): 'x' is not an integer"),
    ],
)
def test_parameter_values_the_kernel_refuses_are_refused_before_booting(
    tmp_path: Path, params: dict[str, object], said: str
) -> None:
    """``irq_count=abc`` for an int, ``uio=maybe`` for a bool: each failed only at the
    module's load, after a boot."""
    ko = _fake_ko(tmp_path / "mydrv.ko", "mydrv", params=TYPED_PARAMS)
    with pytest.raises(GuestConfigError) as e:
        check_module_params(ko, params)
    text = str(e.value)
    assert text.startswith("parameter ") and said in text and "\n" not in text, text


def test_parameter_values_the_kernel_takes_are_taken(tmp_path: Path) -> None:
    ko = _fake_ko(tmp_path / "mydrv.ko", "mydrv", params=TYPED_PARAMS)
    check_module_params(
        ko,
        {
            "count": "-2147483648",
            "mask": "0xffffffff",
            "small": "0377",
            "delta": "+5",
            "big": 2**64 - 1,
            "on": None,
            "off": "oN",
            "tag": "anything at all",
            "list": "1,0x2,-3",
        },
    )
    for value in (1, 0, True, False, "y", "N", "t", "F", "on", "off", "yes"):
        check_module_params(ko, {"on": value})
    for value in (0, "007", "0x1F", "+0", "-0", "12\n"):
        check_module_params(ko, {"count": value})


def test_a_parameter_value_is_refused_before_the_image_or_a_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our driver's ``uio=maybe``: refused in prepare(), no image built, no QEMU."""
    import irqlab.build.image

    ko = _fake_ko(tmp_path / "irqlab.ko", "irqlab", params=IRQLAB_PARAMS)
    monkeypatch.setenv("IRQLAB_KMOD", str(ko))
    monkeypatch.delenv("IRQLAB_IMAGE", raising=False)
    monkeypatch.delenv("IRQLAB_ARCH", raising=False)
    monkeypatch.setattr(Guest, "_find_qemu", staticmethod(lambda arch: object()))
    monkeypatch.setattr(irqlab.build.image, "ensure_image", None)  # called: a TypeError
    with pytest.raises(GuestConfigError, match=r"^parameter uio of irqlab\.ko \(bool\): 'maybe'"):
        Guest(GuestConfig(module_params={"uio": "maybe"})).start()
    with pytest.raises(GuestConfigError, match=r"^parameter gpio_edges of irqlab\.ko \(uint\)"):
        Guest(GuestConfig(module_params={"gpio_edges": "all"})).start()


def test_gpio_parameters_beyond_the_devices_lines_are_refused_before_booting(
    tmp_path: Path,
) -> None:
    """``gpio_edges`` naming a line the device lacks was ignored by the driver (a line in
    the kernel log), and such a ``key_line`` failed its probe: both after a boot."""
    from irqlab.contract.regs import QOM, REGS

    ours = _fake_ko(
        tmp_path / "irqlab.ko", "irqlab", params=(*IRQLAB_PARAMS, "parmtype=key_line:int")
    )
    top = REGS.MAX_GPIO_LINES - 1

    def check(params: dict[str, object], lines: int | None = None) -> None:
        props = {} if lines is None else {QOM.PROP_GPIO_LINES: lines}
        Guest(GuestConfig(module_params=params, device_props=props))._check_driver_params(ours)

    check({"gpio_edges": 1 << top, "key_line": top})
    check({"gpio_edges": "0xffff", "key_line": -1}, lines=16)
    with pytest.raises(GuestConfigError) as e:
        check({"gpio_edges": 1 << 16}, lines=16)
    assert str(e.value) == (
        "parameter gpio_edges=65536: names lines beyond the device's 16 GPIO lines (0 to 15; "
        "its gpio-lines property sets how many)"
    )
    with pytest.raises(GuestConfigError, match=rf"key_line={top + 1}: a line beyond the device"):
        check({"key_line": top + 1})
    with pytest.raises(GuestConfigError, match="key_line=-2: a line beyond"):
        check({"key_line": -2}, lines=8)


def _driver_modinfo_params() -> tuple[str, ...]:
    """Our driver's parameters as its .modinfo has them (``parm=`` with the source's
    MODULE_PARM_DESC, ``parmtype=`` for a module_param), read from its C source."""
    import re

    source = "".join(
        f.read_text() for f in sorted((Path(__file__).parents[2] / "guest-kmod").glob("*.c"))
    )
    descs = re.findall(r'MODULE_PARM_DESC\((\w+),\s*((?:"[^"]*"\s*)+)\);', source)
    types = re.findall(r"\bmodule_param\((\w+),\s*(\w+),", source)
    # a parameter with its own ops says its type so (module_param_cb gives none)
    types += re.findall(r'__MODULE_PARM_TYPE\((\w+),\s*"(\w+)"\)', source)
    assert len(descs) >= 6 and types, "the driver's parameters are declared otherwise now"
    pieces = re.compile(r'"([^"]*)"')  # C's adjacent string literals, joined
    return (
        *(f"parm={n}:" + "".join(pieces.findall(d)) for n, d in descs),
        *(f"parmtype={n}:{t}" for n, t in types),
    )


def test_our_drivers_named_choices_are_checked_before_booting(tmp_path: Path) -> None:
    """``wakeup=bogus`` or ``irq_mode=msi-x`` failed only at the driver's load, after a
    boot; the names are those the driver's own descriptions list."""
    from irqlab.vm.guest import check_driver_choices

    ko = _fake_ko(tmp_path / "irqlab.ko", "irqlab", params=_driver_modinfo_params())
    check_driver_choices(ko, {"wakeup": "workqueue", "irq_mode": "auto", "ring_size": 64})
    check_driver_choices(ko, {"irq_mode": "msix\n", "uio": 1, "key_line": 3})
    with pytest.raises(GuestConfigError) as e:
        check_driver_choices(ko, {"wakeup": "bogus"})
    assert str(e.value) == (
        "parameter wakeup of irqlab.ko: 'bogus' is none of hardirq, thread, workqueue"
    )
    with pytest.raises(GuestConfigError, match=r"'msi-x' is none of auto, intx, msi, msix$"):
        check_driver_choices(ko, {"irq_mode": "msi-x"})
    with pytest.raises(GuestConfigError, match=r"wakeup of irqlab\.ko needs a value: one of "):
        check_driver_choices(ko, {"wakeup": None})
    ours = Guest(GuestConfig(module_params={"wakeup": "Thread"}))
    with pytest.raises(GuestConfigError, match="'Thread' is none of hardirq, thread"):
        ours._check_driver_params(ko)


def test_a_description_that_lists_no_names_gives_no_choices() -> None:
    from irqlab.vm.guest import described_choices

    assert described_choices("a: x (default), y or z") == ("x", "y", "z")
    for text in (
        "event records per open file, a power of two in [2, 65536] (default 256)",
        "GPIO line debounced as a key: press/release records on /dev/irqlabN",
        "mode: fast or a slow one",
        "only: one",
    ):
        assert described_choices(text) is None, text


def test_every_parameter_with_its_own_ops_says_its_type() -> None:
    """module_param_cb() puts no parmtype= in .modinfo: the value check before boot had
    no type for ring_size, and ring_size=abc cost a boot before the kernel refused it.
    Each such parameter says its type (__MODULE_PARM_TYPE), but the choice parameters,
    checked against the choices their descriptions list."""
    import re

    src = "\n".join(
        p.read_text() for p in sorted((Path(__file__).parents[2] / "guest-kmod").glob("*.c"))
    )
    with_ops = set(re.findall(r"^module_param_cb\((\w+),", src, re.M))
    typed = set(re.findall(r"^__MODULE_PARM_TYPE\((\w+),", src, re.M))
    choices = set(re.findall(r"^IRQLAB_CHOICE_PARAM\((\w+),", src, re.M))
    assert with_ops == {"ring_size"}, with_ops  # the scan still finds them
    assert choices == {"wakeup", "irq_mode"}, choices
    assert with_ops <= typed, f"no parmtype for {sorted(with_ops - typed)}"


@pytest.mark.parametrize(
    ("text", "read"),
    [("1", True), ("Yes", True), ("on", True), ("t", True), ("0", False), ("no", False),
     ("off", False), ("F", False), ("maybe", None), ("", None), ("2", None)],
)  # fmt: skip
def test_kstrtobool_reads_as_the_kernel_does(text: str, read: bool | None) -> None:
    """One reading of the kernel's bool grammar, for the value check and kernel_bool."""
    from irqlab.vm.guest import kernel_bool, kstrtobool

    assert kstrtobool(text) is read
    assert kernel_bool(text) is (read is True)


def test_reset_returns_the_device_inputs_to_rest_before_the_agent_reset() -> None:
    """A test that left GPIO line 3 high made the next test's rising edge on it never
    happen: between tests the burst is stopped and every input driven low, before the
    agent's reset (which flushes what that raises), and the counters zeroed last."""
    from irqlab.vm.guest import Guest, GuestConfig

    calls: list[tuple[object, ...]] = []

    class Inj:
        def stop_burst(self) -> None:
            calls.append(("stop_burst",))

        def set_lines(self, levels: int) -> None:
            calls.append(("set_lines", levels))

        def reset_counters(self) -> None:
            calls.append(("reset_counters",))

    class Agent:
        eof = False
        interrupted = None

        def reset(self, dev: str) -> dict[str, object]:
            calls.append(("agent.reset", dev))
            return {"present": True, "monotonic_ns": 5}

        def drain_events(self) -> list[object]:
            calls.append(("drain_events",))
            return []

    g = Guest(GuestConfig(load_irqlab=False))
    g._injector, g._agent = Inj(), Agent()  # type: ignore[assignment]
    g.reset()
    assert calls == [
        ("stop_burst",),
        ("set_lines", 0),
        ("agent.reset", "/dev/irqlab0"),
        ("drain_events",),
        ("reset_counters",),
    ]


@pytest.mark.parametrize(
    ("alias", "names_ours"),
    [
        ("pci:v00001234d000011ECsv*sd*bc*sc*i*", True),  # PCI_DEVICE(0x1234, 0x11ec)
        ("pci:v00001234d*sv*sd*bc*sc*i*", True),  # any device of the vendor
        ("pci:v*d*sv*sd*bc05sc80i*", False),  # a class-wide driver: any vendor, any device
        ("pci:v00008086d000011ECsv*sd*bc*sc*i*", False),  # another vendor's
        ("of:N*T*Cvendor,thing", False),
    ],
)
def test_a_module_naming_our_pci_device_is_found(
    tmp_path: Path, alias: str, names_ours: bool
) -> None:
    ko = _fake_ko(tmp_path / "mydrv.ko", "mydrv", params=(f"alias={alias}",))
    assert irqlab_device_alias(ko) == (alias if names_ours else None)


def test_a_file_that_is_no_module_names_no_device(tmp_path: Path) -> None:
    (tmp_path / "x.ko").write_bytes(b"not an ELF file")
    assert irqlab_device_alias(tmp_path / "x.ko") is None
    assert irqlab_device_alias(tmp_path / "missing.ko") is None


def test_a_module_taking_our_device_is_said_once_in_a_process(tmp_path: Path) -> None:
    """Each test's own guest (irqlab_fresh_guest) with the module said it again, a
    yellow line between the test lines of every test."""
    from irqlab import notice

    alias = "pci:v00001234d000011ECsv*sd*bc*sc*i*"
    ko = _fake_ko(tmp_path / "mydrv.ko", "mydrv", params=(f"alias={alias}",))
    other = _fake_ko(tmp_path / "otherdrv.ko", "otherdrv", params=(f"alias={alias}",))
    said: list[str] = []
    old = notice.set_sink(said.append)
    try:
        for mods in ([ko], [ko], [ko, other]):  # three guests, one after the other
            Guest(GuestConfig(extra_modules=mods))._say_device_taken()
    finally:
        notice.set_sink(old)
    assert [line.split(" is a driver")[0].rsplit("/", 1)[1] for line in said] == [
        "mydrv.ko",
        "otherdrv.ko",
    ], said
