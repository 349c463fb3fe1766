"""The README works as written: every `captioner` / `python` command in its code blocks names a subcommand and
flags that exist, and every link in it leads to a file of the repository.

Commands are parsed, not run: argparse's `parse_args` is replaced by one that parses and then stops the
command, so a typo in a flag (or a flag renamed in the code and not in the README) fails here.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS_WITH_COMMANDS = [README, ROOT / "docs" / "command_line.md", ROOT / "docs" / "deploy.md"]

# Entry points a README line may start with -> how to reach its argument parser.
SCRIPTS = {"predict.py": "captioner.cli.caption", "train.py": "captioner.cli.train"}
NOT_OURS = ("pip", "curl", ".", "cd", "export")  # commands of other tools: not checked
PYTHON_MODULES_NOT_OURS = ("venv", "pytest", "pip")


class Parsed(Exception):
    """Raised by the patched parse_args once the command line parsed: the command stops before doing anything."""


def code_blocks(markdown: str) -> list[str]:
    return re.findall(r"```(?:bash|sh|console)?\n(.*?)```", markdown, re.S)


def command_lines(markdown: str) -> list[str]:
    """Each shell command of the bash blocks: continuation lines joined, `&&` chains split, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip() and not part.strip().startswith("#")]
    return commands


def entry_point(words: list[str]):
    """(a main(argv) function, argv) for one of our commands; None for another tool's."""
    if words[0] == "captioner":
        from captioner import cli

        return cli.main, words[1:]
    if words[0] in ("python", "python3"):
        if words[1] == "-m":
            if words[2] in PYTHON_MODULES_NOT_OURS:
                return None
            assert words[2] == "captioner", f"unknown module {words[2]}"
            from captioner import cli

            return cli.main, words[3:]
        script = words[1]
        if script in SCRIPTS:
            return importlib.import_module(SCRIPTS[script]).main, words[2:]
        path = ROOT / script
        assert path.is_file(), f"{script} does not exist"
        spec = importlib.util.spec_from_file_location(f"readme_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main, words[2:]
    assert words[0] in NOT_OURS, f"a command the test does not know: {words[0]}"
    return None


def stop_after_parsing(monkeypatch) -> None:
    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        raise Parsed(parsed)

    def error(self, message):
        raise AssertionError(f"{self.prog}: {message}")

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.setattr(argparse.ArgumentParser, "error", error)


def readme_commands() -> list[tuple[str, str]]:
    return [(path.name, command) for path in DOCS_WITH_COMMANDS if path.exists()
            for command in command_lines(path.read_text())]


@pytest.mark.parametrize("document, command", readme_commands())
def test_every_command_in_the_readme_parses(document, command, monkeypatch):
    words = shlex.split(command)
    found = entry_point(words)
    if found is None:
        return
    main, argv = found
    stop_after_parsing(monkeypatch)
    with pytest.raises(Parsed):
        main(argv)


def test_the_parse_check_catches_a_flag_that_does_not_exist(monkeypatch):
    main, argv = entry_point(shlex.split("python predict.py photo.jpg --beam 3 --no-such-flag"))
    stop_after_parsing(monkeypatch)
    with pytest.raises(AssertionError, match="no-such-flag"):
        main(argv)
    from captioner import cli

    assert cli.main(["no-such-command"]) == 2  # an unknown subcommand fails too (and never reaches Parsed)


def test_the_readme_has_commands_to_check():
    commands = [command for _, command in readme_commands()]
    assert any(command.startswith("python predict.py") for command in commands)
    assert any(command.startswith("python train.py") for command in commands)
    assert any(command.startswith("captioner ") for command in commands)


@pytest.mark.parametrize("document", [README, ROOT / "captioner" / "pretrained" / "MODEL_CARD.md",
                                      ROOT / "docs" / "results.md", ROOT / "bench" / "RESULTS.md"])
def test_every_link_resolves(document):
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    missing = []
    for target in targets:
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor in the same page
        path = (document.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert not missing, f"{document.name}: links to nothing: {missing}"


def test_the_readme_stays_short():
    """A newcomer reads it in about three minutes: at most about 10,000 characters; the rest lives in docs/."""
    assert len(README.read_text()) <= 10_500


# Each stage script, the trainings it runs and the files its `captioner ensemble` lines write
STAGE_SCRIPTS = {
    "rebuild_shipped.sh": (13, ["flickr8k_mobilenetv2.keras", "flickr8k_mobilenetv2_hard.keras"]),  # A 5, B 2, C 3, hard 3
    "hard_from_raw.sh": (3, ["hard.keras"]),  # one soft stage, two hard epochs from it
    "from_raw_images.sh": (2, []),
}


@pytest.mark.parametrize("name", sorted(STAGE_SCRIPTS))
def test_a_stage_script_runs_its_stages_in_order_with_flags_that_exist(name, tmp_path, monkeypatch):
    """A bench/ stage script with a stand-in `python` that records its command lines: every stage's
    train.py flags and every `captioner ensemble` line parse, each --init names an earlier stage's model,
    and a second run skips the finished stages."""
    import os
    import subprocess

    if not Path("/usr/bin/time").exists():
        pytest.skip("the scripts time their stages with GNU /usr/bin/time")
    bin_dir, log = tmp_path / "bin", tmp_path / "commands.txt"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n')
    fake.chmod(0o755)
    out = tmp_path / "out"
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    script = ROOT / "bench" / name
    subprocess.run(["bash", str(script), str(out), "F8K", "ENT"], cwd=ROOT, env=environment, check=True,
                   capture_output=True, timeout=60)
    commands = [shlex.split(line) for line in log.read_text().splitlines()]
    trainings = [words[1:] for words in commands if words[0] == "train.py"]
    expected_trainings, expected_files = STAGE_SCRIPTS[name]
    assert len(trainings) == expected_trainings
    stop_after_parsing(monkeypatch)
    made = set()
    for argv in trainings:
        with pytest.raises(Parsed) as parsed:
            importlib.import_module(SCRIPTS["train.py"]).main(argv)
        arguments = parsed.value.args[0]
        if arguments.init:
            assert arguments.init in made, f"{arguments.init} is not made by an earlier stage"
        made.add(f"{arguments.run_dir}/best.keras")
    ensembles = [words for words in commands if words[:3] == ["-m", "captioner", "ensemble"]]
    assert [Path(words[3]).name for words in ensembles] == expected_files
    from captioner import cli

    for words in ensembles:
        assert all(member in made for member in words[4:] if member.endswith(".keras"))
        with pytest.raises(Parsed):
            cli.main(words[2:])
    log.unlink()
    subprocess.run(["bash", str(script), str(out), "F8K", "ENT"], cwd=ROOT, env=environment, check=True,
                   capture_output=True, timeout=60)
    rerun = log.read_text().splitlines() if log.exists() else []
    assert not any(line.startswith("train.py") for line in rerun)  # all stages done
