"""Chancery's common library: mechanisms every service uses, never one service's rules."""
