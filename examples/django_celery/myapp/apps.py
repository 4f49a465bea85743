"""AppConfig of the example application."""

from django.apps import AppConfig


class MyappConfig(AppConfig):
    name = "myapp"
