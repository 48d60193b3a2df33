"""pytest configuration of the execution tests: one random seed a run."""

import os

import numpy as np


def pytest_configure(config):
    # Drawn once by the first process (under xdist, the controller, before it
    # starts its workers, which inherit it through the environment), so that
    # every test of a run derives its seed from the one printed below.
    os.environ.setdefault("SWITCHYARD_SEED",
                          str(np.random.SeedSequence().entropy % (2**31)))


def pytest_report_header(config):
    return f"switchyard execution tests: SWITCHYARD_SEED={os.environ['SWITCHYARD_SEED']}"
