"""Security rules over generated artifacts, one small unit each, plus their adapters
(a Pulumi CrossGuard pack and checkov custom checks). No rule is written twice."""
