from setuptools import find_packages, setup

with open("README.rst", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="flask-spacewalk",
    version="0.1.0",
    description=(
        "A Flask extension that turns job classes into a discoverable, "
        "self-documenting REST API, with a ZeroG-compatible job runtime."
    ),
    long_description=long_description,
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["flask_spacewalk", "flask_spacewalk.*"]),
    # the console's own JavaScript and CSS, served by the app (no build step)
    package_data={
        "flask_spacewalk": ["py.typed"],
        "flask_spacewalk.web": ["static/console/*", "static/docs/*"],
    },
    install_requires=[
        # the web layer: blueprint, config, CLI (click comes with it)
        "flask>=2.3",
        # job parameters and the stored job document
        "marshmallow>=3.18",
        # Params -> draft-07 JSON Schema for post-schema
        "marshmallow-jsonschema>=0.16",
        # POST bodies are checked against the published JSON Schema
        "jsonschema>=4.0",
        # the OpenAPI document
        "apispec>=6.0",
        # Swagger UI's files for <prefix>/docs, served by the app (no CDN); the v2
        # fork bundles Swagger UI 5, the first to show OpenAPI 3.1 (same module,
        # swagger_ui_bundle, as swagger-ui-bundle 1.x: do not install both)
        "swagger-ui-bundle-v2>=5.0",
        # webhook signatures as Standard Webhooks 1.0 specifies (SPEC section 9)
        "standardwebhooks>=1.0",
        # the web server of `flask spacewalk serve` and `make run`
        "gunicorn>=21.2",
        # <prefix>/metrics: the Prometheus exposition, on by default
        "prometheus-client>=0.17",
    ],
    extras_require={
        "test": [
            "psycopg[binary]>=3.1",
            "psycopg-pool>=3.1",
            "redis>=4.5",
            "greenstalk>=2.0",
            "pytest>=7",
            "pytest-timeout>=2",
            # `make test` runs the suite on every core: it is mostly waiting on
            # processes and sockets, and CI has five minutes
            "pytest-xdist>=3",
            "hypothesis>=6",
            # the OpenAPI document is checked against the 3.1 meta-schema, and the
            # example service is fuzzed against it
            "openapi-spec-validator>=0.7",
            "schemathesis>=4.0",
        ],
        # the console's browser tests drive Debian's Chromium (/usr/bin/chromium);
        # Playwright's own browser download is never used (.ci/run sets
        # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 and installs chromium with apt). An
        # extra of its own: the marshmallow 3 tox environments run no browser.
        "browser": ["playwright>=1.40"],
        # the distributed backends, each chosen by URL
        "postgresql": ["psycopg>=3.1", "psycopg-pool>=3.1"],
        "redis": ["redis>=4.5"],
        "beanstalkd": ["greenstalk>=2.0"],
        "dev": ["tox>=4", "mypy>=1.5", "ruff>=0.4"],
        # `make docs`: the Sphinx documentation in docs/ (autodoc, -W)
        "docs": ["sphinx>=7"],
        # `make bench` only (benchmarks/README.md): RQ is the reference the job
        # figures are compared with, matplotlib draws docs/_static/bench.png
        "bench": ["rq>=1.16", "matplotlib>=3.5"],
    },
    entry_points={
        "console_scripts": ["spacewalk-worker=flask_spacewalk.worker:main"],
    },
    classifiers=[
        "Framework :: Flask",
        "Programming Language :: Python :: 3",
        "Typing :: Typed",
    ],
)
