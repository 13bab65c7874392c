"""Asking a person before a command does something that cannot be undone (Django's ``flush``
asks the same way)."""

from django.core.management.base import OutputWrapper


def confirmed(stdout: OutputWrapper, question: str) -> bool:
    """Whether the person typed 'yes' after ``question``; no answer (end of input, Ctrl-C)
    is no."""
    try:
        answer = input(f"{question} Type 'yes' to continue: ")
    except (EOFError, KeyboardInterrupt):
        stdout.write("")  # end the prompt's line
        return False
    return answer.strip() == "yes"
