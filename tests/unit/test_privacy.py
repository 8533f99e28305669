from streams.privacy import Pseudonymizer


def test_pseudonyms_are_stable_per_key_and_hide_the_id() -> None:
    alice = Pseudonymizer(b"k1")("alice")
    assert alice == Pseudonymizer(b"k1")("alice")
    assert alice != Pseudonymizer(b"k2")("alice")
    assert "alice" not in alice and alice.startswith("u_")


def test_without_a_key_pseudonyms_are_still_keyed() -> None:
    assert Pseudonymizer(b"")("bob") != Pseudonymizer(b"")("bob")
