"""The one error type for what the user can fix.

Runs on: host.

Every host and tool module raises `UserError` for a bad input file, option or board state;
the `microprop` command prints it as `microprop: message` (and `microprop: hint: ...` on a
second line when there is a hint) with exit status 1. Anything else is a bug and shows its
traceback. The device package raises ValueError with a component prefix
(`model file: bad magic ...`); the host turns that into a UserError where it reads a user's file
(`user_file_error`).
"""


class UserError(Exception):
    """Something the user can fix: the message says what was expected and what was found.

    hint: what to do about it ("is another program holding the port?"), or None.
    path, row, column: where in an input file, written before the message when given
    (`log.csv, row 6, column 'ax': ...`)."""

    def __init__(self, message, hint=None, path=None, row=None, column=None):
        where = []
        if path is not None:
            where.append(str(path))
        if row is not None:
            where.append("row %d" % row)
        if column is not None:
            where.append("column %r" % column)
        self.message = (", ".join(where) + ": " if where else "") + message
        self.hint = hint
        self.path, self.row, self.column = path, row, column
        super().__init__(self.message)


def user_file_error(e, path=None):
    """A device module's ValueError about a user's file -> UserError with the same words, the
    file's path first when it is not already in the message."""
    text = " ".join(str(e).split())
    if path is not None and str(path) not in text:
        return UserError(text, path=path)
    return UserError(text)
