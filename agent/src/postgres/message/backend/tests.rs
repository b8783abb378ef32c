use super::*;

#[test]
fn round_trip() {
    let b = |s: &'static [u8]| Bytes::from_static(s);
    let msgs = vec![
        BackendMessage::Authentication(AuthRequest::Ok),
        BackendMessage::Authentication(AuthRequest::Cleartext),
        BackendMessage::Authentication(AuthRequest::Md5 { salt: [1, 2, 3, 4] }),
        BackendMessage::Authentication(AuthRequest::Sasl {
            mechanisms: vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-256-PLUS".into()],
        }),
        BackendMessage::Authentication(AuthRequest::SaslContinue(b(b"r=abc"))),
        BackendMessage::Authentication(AuthRequest::SaslFinal(b(b"v=xyz"))),
        BackendMessage::BackendKeyData {
            pid: 42,
            secret: b(&[9, 9, 9, 9]),
        },
        BackendMessage::ParameterStatus {
            name: "TimeZone".into(),
            value: "UTC".into(),
        },
        BackendMessage::NegotiateProtocolVersion {
            version: 3 << 16,
            unsupported: vec!["_pq_.x".into()],
        },
        BackendMessage::ReadyForQuery { status: b'T' },
        BackendMessage::RowDescription(b(&[0, 0])),
        BackendMessage::DataRow(vec![Some(b(b"1")), None, Some(b(b""))]),
        BackendMessage::CommandComplete {
            tag: "INSERT 0 5".into(),
        },
        BackendMessage::EmptyQueryResponse,
        BackendMessage::ErrorResponse(
            ErrorFields::new("ERROR", "42501", "no").with(b'D', "detail"),
        ),
        BackendMessage::NoticeResponse(ErrorFields::new("NOTICE", "00000", "hi")),
        BackendMessage::CopyInResponse(b(&[0, 0, 0])),
        BackendMessage::CopyOutResponse(b(&[0, 0, 0])),
        BackendMessage::CopyBothResponse(b(&[0, 0, 0])),
        BackendMessage::CopyData(b(b"x\n")),
        BackendMessage::CopyDone,
        BackendMessage::NotificationResponse {
            pid: 1,
            channel: "c".into(),
            payload: "p".into(),
        },
        BackendMessage::ParseComplete,
        BackendMessage::BindComplete,
        BackendMessage::CloseComplete,
        BackendMessage::NoData,
        BackendMessage::PortalSuspended,
        BackendMessage::ParameterDescription(b(&[0, 0])),
        BackendMessage::FunctionCallResponse(Some(b(b"t"))),
        BackendMessage::FunctionCallResponse(None),
    ];
    for m in msgs {
        assert_eq!(BackendMessage::decode(&m.encode()).unwrap(), m, "{m:?}");
    }
    assert_eq!(BackendMessage::rows_from_tag("INSERT 0 5"), Some(5));
    assert_eq!(BackendMessage::rows_from_tag("CREATE TABLE"), None);
}

#[test]
fn malformed() {
    assert!(BackendMessage::decode(&Payload::new(b'!').finish()).is_err());
    assert!(BackendMessage::decode(&Payload::new(b'Z').u8(b'X').finish()).is_err());
    // DataRow claiming more bytes than it has
    assert!(
        BackendMessage::decode(&Payload::new(b'D').i16(1).i32(10).bytes(b"ab").finish()).is_err()
    );
    assert!(BackendMessage::decode(&Payload::new(b'D').i16(1).i32(-2).finish()).is_err());
    // ErrorResponse without the final NUL
    assert!(BackendMessage::decode(&Payload::new(b'E').u8(b'S').cstr("ERROR").finish()).is_err());
    assert!(BackendMessage::decode(&Payload::new(b'K').i32(1).bytes(&[1]).finish()).is_err());
    assert!(BackendMessage::decode(&Payload::new(b'R').i32(5).bytes(&[1, 2]).finish()).is_err());
}
