import unittest

from calc import evaluate, main


class EvaluateTest(unittest.TestCase):
    def test_adds(self):
        self.assertEqual(evaluate("2", "+", "3"), 5)

    def test_subtracts(self):
        self.assertEqual(evaluate("2", "-", "3"), -1)

    def test_multiplies(self):
        self.assertEqual(evaluate("4", "*", "2.5"), 10)

    def test_divides(self):
        self.assertEqual(evaluate("1", "/", "4"), 0.25)

    def test_refuses_unknown_operators(self):
        with self.assertRaises(ValueError):
            evaluate("1", "%", "2")

    def test_division_by_zero_raises(self):
        with self.assertRaises(ZeroDivisionError):
            evaluate("1", "/", "0")


class MainTest(unittest.TestCase):
    def test_usage_error_exits_2(self):
        self.assertEqual(main(["1", "+"]), 2)

    def test_version(self):
        self.assertEqual(main(["--version"]), 0)


if __name__ == "__main__":
    unittest.main()
