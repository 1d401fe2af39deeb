"""Packages and package data; everything else is in pyproject.toml.

``sql/`` and ``notebooks/`` stay at the top of the repository (where people open them) and are shipped in the
wheel as ``condvest/_sql`` and ``condvest/_notebooks``, so that a plain ``pip install`` (the container image)
can deploy the retention policy and run the notebooks; ``condvest.resources`` finds them in either place.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["condvest*", "runner*"]), "condvest._sql", "condvest._notebooks"],
    package_dir={"condvest._sql": "sql", "condvest._notebooks": "notebooks"},
    package_data={
        "condvest": ["nyse_sessions.txt"],  # the NYSE calendar as pandas_market_calendars computes it (fast start)
        "condvest._sql": ["*.sql", "*.sh"],
        "condvest._notebooks": ["*.ipynb"],
        "runner": ["static/*.js", "static/*.txt"],  # plotly.js's finance bundle for the chart PNGs, its licence
    },
)
