"""Development harnesses, not part of the product's steps: the embedded demo, a local S3 server, a local Speech
endpoint, and the chaos hook that rehearsals and the fault-injection tests drive."""
