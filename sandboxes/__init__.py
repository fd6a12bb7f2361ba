"""Local HTTP servers that imitate each ad platform.

A test rig and development tool, outside `workers`: install it with the `sandbox` extra
(`dev` includes it); production workers and producers never import it.
"""
