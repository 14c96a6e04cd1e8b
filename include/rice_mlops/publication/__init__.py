"""Publication: what a run tells GitHub (the pull request, the commit status, redelivery of
missed pushes) and the one-line outcome the run note, status and e-mail share.
"""
