"""The behaviour every implementation of an interface shares: a base class a test module subclasses once per backend.

The classes are not named ``Test...``, so pytest collects their tests only
through the subclasses, which provide the backend as a fixture.
"""
