"""Runnable flows used by the README, the demo, the Helm chart's samples and the tests."""
