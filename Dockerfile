# One image for every job: the runner as entrypoint, the notebooks and sql/ inside the installed package.
#   docker build -t condvest .
#   docker run --rm -e CONDVEST_LAKE_URI=s3://bucket condvest daily        (= python -m runner job daily)

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY condvest/ condvest/
COPY runner/ runner/
COPY notebooks/ notebooks/
COPY sql/ sql/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Chromium draws the PNG copies of the run pages' charts (kaleido); without it the runs go on, without PNGs
RUN apt-get update && apt-get install -y --no-install-recommends chromium && rm -rf /var/lib/apt/lists/*
COPY constraints.txt /tmp/constraints.txt
COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --constraint /tmp/constraints.txt /tmp/wheels/condvest-*.whl \
 && python -m ipykernel install --sys-prefix --name python3 \
 && rm -rf /tmp/wheels /tmp/constraints.txt \
 && useradd --create-home --uid 10001 condvest
USER condvest
WORKDIR /home/condvest
ENTRYPOINT ["python", "-m", "runner", "job"]
CMD ["daily"]
