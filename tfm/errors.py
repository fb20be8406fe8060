"""The one exception type for mistakes a user can fix (a bad path, value or checkpoint), and the rewriting of the
errors of the libraries beneath (jsonargparse, YAML, Lightning) into such one-liners.

The CLI prints its message as one line, with no traceback, and exits with status 2.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml


class UserError(ValueError):
    """A problem in the user's input; the message names the bad value and what would be valid."""


def concise_parse_error(message: str) -> str:
    """The gist of a jsonargparse error: which key is unknown or which value is bad, and the valid
    values where the type is a choice (``Literal``)."""
    where = ".".join(re.findall(r'Parser key "([^"]+)"', message))
    given = re.search(r"(?:Got value|Given value): (.+)", message)
    got = given.group(1).strip() if given else None
    if got and got.startswith("NestedArg("):
        m = re.search(r"val='?([^')]*)'?\)", got)
        got = m.group(1) if m else got
    choices: list[str] = []
    for group in re.findall(r"Literal\[([^\]]*)\]", message):
        choices += [c.strip() for c in group.split(",") if c.strip() and c.strip() not in choices]
    if choices and got is not None:
        strings = [c for c in choices if c.startswith("'")] or choices
        return f"--{where}={got}: expected one of {', '.join(strings)}"
    for pattern, template in (
        (r"Option '([^']+)' is not accepted", "unknown option {where}.{0}"),
        (r'Key "([^"]+)" is not expected', "unknown key {where}.{0}"),
        (r"Unrecognized arguments: (.+)", "unrecognized arguments: {0}"),
        (r"Expected a (<[^>]+>|\S+)\. Got value: (.+)", "{where}: expected {0}, got {1!r}"),
        (r"Expected a (<[^>]+>|\S+)", "{where}: expected {0}"),
    ):
        m = re.search(pattern, message)
        if m:
            text = template.format(*[g.strip() for g in m.groups()], where=where).lstrip(".")
            return f"{text} (valid keys and types: --help, --print_config)"
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return " ".join(lines[:2])[:400] + " (see --help)"


def check_yaml_files(args: list[str]) -> None:
    """Each ``--config`` file exists and is valid YAML: one line naming the file, line and column
    (jsonargparse names neither the file nor, for a file, the line)."""
    paths = [b for a, b in zip(args, args[1:]) if a == "--config"] + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"--config {path} does not exist (the configs are in configs/; a run's own is <run>/config.yaml)")
        try:
            yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise UserError(f"--config {path} is not valid YAML{at}: {problem}") from None


def one_line(e: BaseException) -> str:
    """The message of a user error; one raised in a DataLoader worker comes back wrapped with the
    worker's traceback, of which only the original message is the user's."""
    text = str(e).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def lightning_user_error(e: BaseException) -> UserError | None:
    """Lightning's checks of values that depend on the data (known only once it is loaded), as one line."""
    m = re.search(r"`val_check_interval` \((\d+)\) must be less than or equal to the number of the training batches \((\d+)\)", str(e))
    if m:
        every, batches = m.groups()
        return UserError(f"--trainer.val_check_interval={every} is more than the {batches} training batches of an epoch of this data: "
                         f"pass --trainer.val_check_interval={batches} (or fewer, or a fraction such as 0.5), or "
                         "--trainer.check_val_every_n_epoch=null to count the steps across epochs")
    return None
