"""What a shared report must not carry: absolute local paths (unless asked) and anything like a key.

Records never hold API keys (`request.public_url`, settings keep only the variable's name), but model
answers, error messages and notes are free text, so every string a report shows passes through here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath

# Things shaped like secrets: OpenAI/Anthropic-style keys, bearer tokens, Hugging Face tokens.
_SECRET = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{12,}|hf_[A-Za-z0-9]{16,}|Bearer\s+[A-Za-z0-9._~+/=-]{12,})", re.IGNORECASE
)
# Absolute paths: POSIX (/a/b, ~/a) and Windows (C:\a\b, \\server\share). The last part is kept.
_POSIX_PATH = re.compile(r"(?<![\w:/.])(?:~|/)(?:[\w.@+-][\w.@+ -]*/)+([\w.@+ -]*[\w.@+-])")
_WINDOWS_PATH = re.compile(
    r"\b[A-Za-z]:\\(?:[^\\\s\"'<>|]+\\)+([^\\\s\"'<>|]+)|\\\\[^\\\s]+\\(?:[^\\\s]+\\)*([^\\\s]+)"
)
SECRET_MARK = "[hidden]"


def file_name(path: str) -> str:
    """The last part of a local path (either flavour), e.g. for a model folder or an image source."""
    text = str(path)
    name = PureWindowsPath(text).name if "\\" in text else PurePosixPath(text).name
    return name or text


@dataclass
class Redactor:
    """Applied to every shown string. `include_paths` keeps paths as they are (the user asked for them)."""

    include_paths: bool = False
    known: list[str] = field(default_factory=list)  # paths known to be local (sources, dataset root)

    def text(self, value: object) -> str:
        out = _SECRET.sub(SECRET_MARK, "" if value is None else str(value))
        if self.include_paths:
            return out
        for path in sorted(self.known, key=len, reverse=True):
            if path and len(path) > 1 and path in out:
                out = out.replace(path, file_name(path))
        out = _WINDOWS_PATH.sub(lambda m: m.group(1) or m.group(2), out)
        return _POSIX_PATH.sub(lambda m: m.group(1), out)

    def name(self, path: object) -> str:
        """A source, model or folder as shown: an absolute local path becomes its last part (unless
        paths were asked for); hub ids ("org/model"), relative paths and URLs stay as they are."""
        text = _SECRET.sub(SECRET_MARK, "" if path is None else str(path))
        if self.include_paths or not text:
            return text
        if " [" in text:  # a plane or part of a file: "/a/b/stack.tif [plane 3]"
            return self.text(text)
        absolute = text.startswith(("/", "~", "\\\\")) or re.match(r"^[A-Za-z]:\\", text) is not None
        return file_name(text) if absolute else self.text(text)
