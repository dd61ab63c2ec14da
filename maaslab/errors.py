"""The one exception type a user can cause, so every face can show it as a plain message."""


class MaaslabError(ValueError):
    """Bad input from a user (unknown name, missing folder, corrupted file): say what and why.

    The CLI prints it as one line and exits with code 2, a page shows it with `st.error`, the
    server answers it with a 4xx. Anything else that escapes is a bug.
    """
