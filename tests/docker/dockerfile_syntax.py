"""Just enough Dockerfile and .dockerignore syntax to check the image definition without a Docker engine."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # the rest of the logical line, continuations joined
    stage: int  # index of the FROM it belongs to; -1 before the first FROM (global ARGs)


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    stage_names: list[str] = field(default_factory=list)

    def stage(self, index: int) -> list[Instruction]:
        return [ins for ins in self.instructions if ins.stage == index]

    def final_stage(self) -> list[Instruction]:
        return self.stage(len(self.stage_names) - 1)

    def all(self, keyword: str) -> list[Instruction]:
        return [ins for ins in self.instructions if ins.keyword == keyword]


def parse_dockerfile(path: Path) -> Dockerfile:
    """Logical instructions: comment lines dropped (also inside continuations), backslash continuations joined."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current.strip():
        logical.append(current.strip())

    instructions: list[Instruction] = []
    stage_names: list[str] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = arguments.split()
            stage_names.append(words[2] if len(words) >= 3 and words[1].upper() == "AS" else "")
        instructions.append(Instruction(keyword, arguments.strip(), len(stage_names) - 1))
    return Dockerfile(instructions, stage_names)


def split_flags(arguments: str) -> tuple[dict[str, str], str]:
    """Leading `--flag=value` options of an instruction, and the rest."""
    flags: dict[str, str] = {}
    rest = arguments
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        flags[name] = value
        rest = rest.lstrip()
    return flags, rest


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form instruction (ENTRYPOINT, CMD, HEALTHCHECK's CMD)."""
    value = json.loads(arguments)
    if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
        raise ValueError(f"not an exec-form JSON array of strings: {arguments}")
    return value


def copy_sources(instruction: Instruction) -> tuple[dict[str, str], list[str]]:
    """Flags and source paths of a COPY or ADD (the last word is the destination)."""
    flags, rest = split_flags(instruction.arguments)
    words = exec_form(rest) if rest.startswith("[") else shlex.split(rest)
    return flags, words[:-1]


def healthcheck_command(instruction: Instruction) -> list[str]:
    _, rest = split_flags(instruction.arguments)
    keyword, _, command = rest.partition(" ")
    if keyword.upper() != "CMD":
        raise ValueError(f"HEALTHCHECK without CMD: {instruction.arguments}")
    return exec_form(command.strip())


# --- .dockerignore -------------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: `*` and `?` stay within one path element, `**` spans any number of them."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True)
class DockerIgnore:
    """The exclusion rules of a .dockerignore: the last pattern matching a path or one of its parents wins."""

    rules: tuple[tuple[re.Pattern[str], bool], ...]  # (pattern, excludes)

    @classmethod
    def parse(cls, path: Path) -> DockerIgnore:
        rules = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            excludes = not line.startswith("!")
            pattern = line.lstrip("!").strip()
            pattern = str(PurePosixPath(pattern.lstrip("/")))
            rules.append((_pattern_regex(pattern), excludes))
        return cls(tuple(rules))

    def excludes(self, relative_path: str) -> bool:
        parts = PurePosixPath(relative_path).parts
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for regex, excludes in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                excluded = excludes
        return excluded
