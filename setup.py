"""
Packaging for lbtwist: a load balancer and reverse proxy on Twisted.
"""

from setuptools import setup

setup(
    name="lbtwist",
    version="0.1.0.dev0",
    description="An HTTP load balancer and reverse proxy written in Python on Twisted",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    packages=["lbtwist", "lbtwist._http", "twisted.plugins"],
    package_data={"twisted": ["plugins/lbtwist_plugin.py"]},
    install_requires=[
        "twisted[tls]>=26.10.0",
        "attrs>=23.1.0",
        "zope.interface>=6.0",
        "prometheus_client>=0.20",
        # llhttp, the HTTP/1.1 parser of Node.js, for both sides of the
        # HTTP data path.
        "httptools>=0.6.4",
    ],
    extras_require={
        # treq: in-memory HTTP doubles; websockets: a real WebSocket client
        # and server for the tunnel tests.
        # hypothesis: property and fuzz tests of the HTTP data path.
        # matplotlib: the simulator's --plot (the "plot" extra), tested too.
        "test": [
            "pytest>=8",
            "treq>=24.9.1",
            "websockets>=13",
            "hypothesis>=6.100",
            "matplotlib>=3.5",
        ],
        # The simulator's --plot: python -m lbtwist simulate ... --plot FILE.png
        "plot": ["matplotlib>=3.5"],
        "dev": ["mypy", "mypy-zope", "black", "isort", "towncrier"],
    },
    entry_points={"console_scripts": []},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: Proxy Servers",
    ],
)
