"""
The data scripts' self-tests: check(cond, what) prints one line per check,
summary() the "N passed, M failed" line the test scripts count, and says
whether every check passed.
"""


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def __call__(self, cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if cond:
            self.passed += 1
        else:
            self.failed += 1

    def summary(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return self.failed == 0
