"""Operating-system errors a user can fix (full disk, read-only or forbidden path, a file where a
directory should be …) turned into one line that names the path and the fix.

The CLI's `main` catches `OSError` once for every command and asks `describe` for that line; an
errno not listed here is a bug or an environment we have not met, and keeps its traceback.
"""

from __future__ import annotations

import errno

FIXES = {
    errno.ENOSPC: ("no space left on the device", "free some space or write somewhere else (--out / train.output_dir)"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write somewhere else"),
    errno.EFBIG: ("file too large for this file system or this shell's limit (ulimit -f)",
                  "raise the limit or write somewhere else"),
    errno.EROFS: ("read-only file system", "write somewhere writable (--out / train.output_dir)"),
    errno.EACCES: ("permission denied", "check the permissions of the path or choose another one"),
    errno.EPERM: ("operation not permitted", "check the permissions of the path or choose another one"),
    errno.ENOTDIR: ("it, or a directory above it, is a file", "choose a directory path"),
    errno.EISDIR: ("is a directory, not a file", "give a file name"),
    errno.EEXIST: ("already exists", "remove it or choose another path"),
    errno.ENOTEMPTY: ("directory is not empty", "remove it or choose another path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter name"),
    errno.ELOOP: ("too many symbolic links", "fix the symlink"),
    errno.EMFILE: ("too many open files", "raise `ulimit -n`"),
    errno.EIO: ("input/output error", "check the disk or device"),
    errno.EXDEV: ("cannot move across file systems", "write on the same file system"),
}


def describe(e: OSError) -> str | None:
    """One line for a fixable OS error ("PATH: what — fix"), or None when it is not one."""
    fix = FIXES.get(e.errno)
    if fix is None:
        return None
    what, how = fix
    where = e.filename if e.filename is not None else "(a file being written)"
    other = f" → {e.filename2}" if getattr(e, "filename2", None) else ""
    return f"{where}{other}: {what} — {how}"


def from_message(e: BaseException, path: str) -> OSError | None:
    """The OSError hidden in a library's own exception text (torch and safetensors wrap ENOSPC in
    RuntimeError / SafetensorError), so it reaches the same one-line report; None if none is."""
    text = str(e)
    for code, needles in ((errno.ENOSPC, ("No space left", "StorageFull", "code: 28")),
                          (errno.EDQUOT, ("quota",)), (errno.EFBIG, ("File too large", "FileTooLarge", "code: 27")),
                          (errno.EROFS, ("Read-only file system", "ReadOnlyFilesystem", "code: 30")),
                          (errno.EACCES, ("Permission denied", "PermissionDenied"))):
        if any(n in text for n in needles):
            return OSError(code, FIXES[code][0], path)
    return None
