"""UNTRUSTED side: everything that runs inside the sandbox, beside student code.

The broker and the student process (``process``), the one student-module
loader with the grader's encoder (``loader``), the probes that call student
code (``probes``), the forbidden-API monitor (``forbidden``), the inputs the
checks describe and the values sent back (``values``), and the loss-file
parser (``lossfile_reader``). Never imports the harness, batch or authoring.
"""
