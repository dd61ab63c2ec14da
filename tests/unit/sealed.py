"""A stand-in for a split that must not be read: tests that prove a choice never looks at the
test split put it in place of X_test / y_test (imported by those tests)."""


class Sealed:
    """Any read of it (as an array, its length, an item, an attribute) fails the test."""

    def _read(self, *args, **kwargs):
        raise AssertionError("the test split was read")

    __array__ = __len__ = __getitem__ = __iter__ = _read

    def __getattr__(self, name):
        self._read()
