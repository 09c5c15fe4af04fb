"""Running an exercise's check in-process with an answer substituted, for the tests of the checks
(tests/test_exercises_NN.py): the solved notebook's code cells are exec'd in order, the answer (source code)
replaces the exercise's cell, and the check cell runs. No kernel per case, so hundreds of cases stay fast."""
from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"


class Exercises:
    """The solved notebook's code cells, with a namespace ready before each exercise (earlier ones solved)."""

    def __init__(self, path: Path):
        self.cells = [c for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code"]
        self.exercises = [i for i, c in enumerate(self.cells) if "exercise" in c.metadata.get("tags", [])]
        self._ready: dict[int, dict] = {}

    def _before(self, number: int) -> dict:
        if number not in self._ready:
            namespace: dict = {"__name__": "__exercises__"}
            for cell in self.cells[: self.exercises[number - 1]]:
                exec(compile(cell.source, f"<cell before exercise {number}>", "exec"), namespace)
            self._ready[number] = namespace
        return self._ready[number]

    def check(self, number: int, answer: str | None = None) -> None:
        """Run exercise `number`'s check after `answer` (the solution when None); raises what the check raises."""
        index = self.exercises[number - 1]
        namespace = dict(self._before(number))
        source = self.cells[index].source if answer is None else textwrap.dedent(answer)
        exec(compile(source, "<answer>", "exec"), namespace)
        for cell in self.cells[index + 1:]:
            if "exercise" in cell.metadata.get("tags", []):
                break
            exec(compile(cell.source, "<check>", "exec"), namespace)


def rejects(notebook: Exercises, number: int, answer: str) -> str:
    """The check's message for a wrong `answer` (which it must reject, saying something)."""
    with pytest.raises(AssertionError) as caught:
        notebook.check(number, answer)
    message = str(caught.value)
    assert message, "a check's assertion must say what was expected and what came"
    return message


def checker(path: Path) -> tuple[Callable[..., dict], Callable[[int, str], None]]:
    """(run_check(number, answer=None) -> namespace, assert_rejected(number, answer)) for one solved notebook:
    every cell runs afresh, earlier exercises with their solutions, exercise `number` with `answer`."""

    def run_check(number: int, answer: str | None = None) -> dict:
        cells = [c for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code"]
        namespace: dict = {"__name__": "__main__"}
        seen = 0
        for cell in cells:
            tags = cell.metadata.get("tags", [])
            if "exercise" in tags:
                seen += 1
                if seen == number and answer is not None:
                    exec(compile(textwrap.dedent(answer), f"<answer {number}>", "exec"), namespace)
                    continue
            exec(compile(cell.source, f"<cell {seen}>", "exec"), namespace)
            if "check" in tags and seen == number:
                return namespace
        raise AssertionError(f"exercise {number} has no check cell")

    def assert_rejected(number: int, answer: str) -> None:
        with pytest.raises(AssertionError) as failure:
            run_check(number, answer)
        message = str(failure.value)
        assert "expected" in message and "got" in message, \
            f"the check's message does not say what was expected and got: {message!r}"

    return run_check, assert_rejected


def standard_tests(path: Path, wrong: dict[int, dict[str, str]], right: dict[int, dict[str, str]]) -> tuple:
    """The five tests every lesson's checks get, for a solved notebook and its tables of answers: the solution
    passes; every wrong answer is rejected, saying what was expected and what came; every differently written
    correct answer is accepted; the unsolved stub fails with its friendly message; every exercise has a hint,
    a check and at least two wrong answers. Assign them to module-level names so pytest collects them."""
    from pipeline import course

    run_check, assert_rejected = checker(path)

    @pytest.mark.parametrize("number", sorted(wrong))
    def test_the_solution_passes_its_check(number: int):
        run_check(number)

    @pytest.mark.parametrize("number,name", [(n, name) for n, answers in wrong.items() for name in answers],
                             ids=lambda v: str(v))
    def test_a_wrong_answer_is_rejected(number: int, name: str):
        assert_rejected(number, wrong[number][name])

    @pytest.mark.parametrize("number,name", [(n, name) for n, answers in right.items() for name in answers],
                             ids=lambda v: str(v))
    def test_a_correct_answer_written_differently_is_accepted(number: int, name: str):
        run_check(number, right[number][name])

    @pytest.mark.parametrize("number", sorted(wrong))
    def test_the_unsolved_stub_fails_with_a_friendly_message(number: int):
        cells = [c for c in nbformat.read(str(path), as_version=4).cells if "exercise" in c.metadata.get("tags", [])]
        stub = course.stub_source(cells[number - 1].source, f"Exercise {number}")
        with pytest.raises(NotImplementedError, match=f"Exercise {number}: not solved yet"):
            run_check(number, stub)

    def test_every_exercise_has_a_hint_and_is_tested():
        cells = nbformat.read(str(path), as_version=4).cells
        exercises = [i for i, c in enumerate(cells) if "exercise" in c.metadata.get("tags", [])]
        assert len(exercises) >= 4 and sorted(wrong) == sorted(right) == list(range(1, len(exercises) + 1))
        for i in exercises:
            assert cells[i - 1].cell_type == "markdown" and "<details><summary>Hint" in cells[i - 1].source
            assert "check" in cells[i + 1].metadata.get("tags", [])
        assert all(len(answers) >= 2 for answers in wrong.values())

    return (test_the_solution_passes_its_check, test_a_wrong_answer_is_rejected,
            test_a_correct_answer_written_differently_is_accepted,
            test_the_unsolved_stub_fails_with_a_friendly_message, test_every_exercise_has_a_hint_and_is_tested)
