"""Compilers of Prometheus recording rules: fleet drift (``drift``) and live quality
(``quality``) from the counters every replica exports, with promtool tests."""
