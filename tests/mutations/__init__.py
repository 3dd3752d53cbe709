"""The bugs `make mutation` plants, one at a time, in a copy of the code: each is a way the
product could be wrong while still running, and each must make one of its tests fail.

``old`` must occur exactly once in ``file`` (the runner refuses a stale entry). ``repeat``
runs the tests several times, for protections against races: the race tests force the
interleaving, so they must kill the mutation every time.
"""

from mutations.base import Mutation
from mutations.inputs import INPUTS
from mutations.speed import SPEED
from mutations.steps import STEPS

MUTATIONS = [*STEPS, *INPUTS, *SPEED]

__all__ = ["MUTATIONS", "Mutation"]
