"""Local HTTP servers that imitate each ad platform."""
