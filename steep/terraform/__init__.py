"""The Terraform roots of `steep provision` (local, aws, gcp, azure) and their shared modules.

A package only so that the wheel carries them: steep reads them as files with importlib.resources.
"""
