"""The generated mutants that no test kills, each with why that is right: the mutant is
equivalent (the code means the same) or harmless (only a message's wording, or a
resource's lifetime, changes). "No test reaches it" is never a reason here: write the
test. ``scripts/mutants.py`` fails on a survivor missing from this list, and on an entry
that is no longer a survivor. ``mutmut show NAME`` prints a mutant's change.
"""

SURVIVORS: dict[str, str] = {}
