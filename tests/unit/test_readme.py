"""The README's first-screen example runs as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_first_handler_example_and_its_one_line_test_run():
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    one_line = re.search(r"`(assert call\(.*?)`", text).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    exec("from swarm.testing import call\n" + one_line, namespace)  # noqa: S102
    assert namespace["job"].stages["store"].batch == 32
