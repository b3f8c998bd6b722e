"""Error types of the host side.

Runs on: host.
"""


class DataError(ValueError):
    """Bad input data: the message names the file, and the row and column where they apply."""

    def __init__(self, message, path=None, row=None, column=None):
        where = []
        if path is not None:
            where.append(str(path))
        if row is not None:
            where.append("row %d" % row)
        if column is not None:
            where.append("column %r" % column)
        self.path, self.row, self.column = path, row, column
        super().__init__((", ".join(where) + ": " if where else "") + message)
