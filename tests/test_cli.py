"""`python -m model_server`'s flags: environment first, explicit flags over it, unknown flags stop the start."""

from __future__ import annotations

import pytest

from model_server.__main__ import build_parser, main, parse_args, settings_from


def settings_for(argv: list[str]):
    return settings_from(build_parser().parse_args(argv))


def test_the_environment_names_the_model_when_no_flag_does(monkeypatch):
    monkeypatch.setenv("BARK_MODEL_NAME", "tts")
    assert settings_for(["--demo"]).model_name == "tts"


def test_an_explicit_flag_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("BARK_MODEL_NAME", "tts")
    monkeypatch.setenv("BARK_MAX_BATCH_SIZE", "8")
    settings = settings_for(["--demo", "--model_name", "speech", "--max_batch_size", "4"])
    assert (settings.model_name, settings.max_batch_size) == ("speech", 4)


def test_with_neither_the_model_is_bark(monkeypatch):
    monkeypatch.delenv("BARK_MODEL_NAME", raising=False)
    assert settings_for(["--demo"]).model_name == "bark"


@pytest.mark.parametrize(
    ("argv", "named", "hint"),
    [
        (["--max-batch-size", "4"], "--max-batch-size 4", "did you mean --max_batch_size?"),
        (["--demo", "--modelid=suno/bark"], "--modelid=suno/bark", "did you mean --model_id?"),
        (["--dev", "cpu"], "--dev cpu", None),  # no abbreviations: --dev is not --device
        (["--demo", "stray"], "stray", None),
    ],
)
def test_an_unknown_flag_stops_the_start_and_names_it(capsys, argv, named, hint):
    with pytest.raises(SystemExit) as stopped:
        main(argv)  # stops before anything is loaded
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert f"unrecognized arguments: {named}" in error
    if hint:
        assert hint in error


def test_kserve_flags_stay_known():
    args = parse_args(build_parser(), ["--http_port", "9000", "--enable_grpc", "false", "--event-loop", "asyncio"])
    assert (args.http_port, args.enable_grpc, args.event_loop) == (9000, False, "asyncio")
