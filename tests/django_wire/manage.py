#!/usr/bin/env python
"""Django project of the wire test: a django-cqrs 3.1.0 master or replica, chosen by WIRE_ROLE."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wire.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
