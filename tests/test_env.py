"""The environment readers (cugroupgemm/env.py) see every change of os.environ at once."""

import pytest

from cugroupgemm import env


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("sm90", "sm90"), (" SM90 \n", "sm90"), ("Portable", "portable")])
def test_forced_family_reads_the_variable_as_it_is_now(monkeypatch, value, expected):
    monkeypatch.setenv("CUGROUPGEMM_KERNEL", "sm100")
    assert env.forced_family() == "sm100"  # read once before the change
    if value is None:
        monkeypatch.delenv("CUGROUPGEMM_KERNEL")
    else:
        monkeypatch.setenv("CUGROUPGEMM_KERNEL", value)
    assert env.forced_family() == expected


@pytest.mark.parametrize("value, expected", [
    (None, False), ("1", True), (" TRUE ", True), ("on", True), ("0", False), ("maybe", False)])
def test_flags_follow_set_and_unset(monkeypatch, value, expected):
    for name, reader in (("CUGROUPGEMM_CHECK_MASKED_M", env.check_masked_m),
                         ("CUGROUPGEMM_PRINT_CONFIG", env.print_config),
                         ("CUGROUPGEMM_DUMP_SOURCE", env.dump_source_on_error)):
        monkeypatch.setenv(name, "yes")
        assert reader() is True
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
        assert reader() is expected, name


@pytest.mark.parametrize("value, expected", [(None, True), ("off", False), (" No", False),
                                             ("1", True)])
def test_self_check_is_on_unless_switched_off(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CUGROUPGEMM_SELFCHECK", raising=False)
    else:
        monkeypatch.setenv("CUGROUPGEMM_SELFCHECK", value)
    assert env.self_check() is expected


def test_values_match_os_environ_for_any_text(monkeypatch):
    # Non-ASCII text and a value that is not valid UTF-8 (kept as surrogates by os.environ).
    for value in ("é sm90", "a\udcffb", "x=y"):
        monkeypatch.setenv("CUGROUPGEMM_TEST_VALUE", value)
        assert env._value("CUGROUPGEMM_TEST_VALUE") == value
    monkeypatch.delenv("CUGROUPGEMM_TEST_VALUE")
    assert env._value("CUGROUPGEMM_TEST_VALUE") == ""
