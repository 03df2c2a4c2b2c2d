//! SPIFFE ID and trust-domain parsing: no input may panic, and whatever parses must print back
//! exactly as given and parse again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_spiffe::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = text.parse::<SpiffeId>() {
        assert_eq!(id.as_str(), text);
        assert_eq!(id.to_string().parse::<SpiffeId>().as_ref(), Ok(&id));
        let td = id.trust_domain();
        assert!(id.is_member_of(&td));
        let rebuilt = SpiffeId::from_segments(&td, &id.segments().collect::<Vec<_>>());
        assert_eq!(rebuilt.as_ref(), Ok(&id));
    }
    if let Ok(td) = TrustDomain::from_name_or_id(text) {
        assert_eq!(TrustDomain::new(td.as_str()).as_ref(), Ok(&td));
    }
});
