import pytest


def test_bf16_on_a_cpu_without_native_support_warns_naming_the_capability(monkeypatch):
    import torch

    from longtail import hardware

    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    with pytest.warns(UserWarning, match=torch.backends.cpu.get_cpu_capability()):
        hardware.warn_if_slow_precision("bf16-mixed", "cpu")


def test_fp32_and_native_bf16_do_not_warn(monkeypatch, recwarn):
    from longtail import hardware

    monkeypatch.setattr(hardware, "native_bf16", lambda: True)
    hardware.warn_if_slow_precision("bf16-mixed", "cpu")
    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    hardware.warn_if_slow_precision("32", "cpu")
    assert not [w for w in recwarn if "bfloat16" in str(w.message)]
