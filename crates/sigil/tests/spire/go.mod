module sigil.test/spire

go 1.26
