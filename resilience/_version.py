__version__ = "0.1.0"
"""This release's version (SemVer), the one the distribution was built with.

Example::

    import resilience

    print(resilience.__version__)   # "0.1.0"
"""
