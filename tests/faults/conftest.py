def pytest_terminal_summary(terminalreporter):
    """The suite's score, printed at the end of every run that ran it."""
    from tests.faults.test_fault_suite import SCORE

    if SCORE.runs or SCORE.seed is not None:
        terminalreporter.write_sep("=", "fault injection")
        terminalreporter.write_line(f"seed {SCORE.seed}: {SCORE.line()}")
        terminalreporter.write_line(f"reproduce with: pytest tests/faults --fault-seed {SCORE.seed}")
