"""Laptops that enrol themselves: tokens, the server's enrolment route, the package, processing (docs/enrolment.md)."""
