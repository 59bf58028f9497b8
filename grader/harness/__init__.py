"""TRUSTED side: judges what the worker sends; never runs student code or imports torch.

The worker client (``client``), where workers come from (``workers``), one
request and its reply (``channel``), one grading request (``request``), the
pytest plugin over the check catalogue (``plugin``), the
engine every mode calls (``engine``), judging with numpy (``judging``) and
the expected values (``expected``). Never imports ``grader.worker``.
"""
