//! The device tables through the statements of `sql::devices`.

use model::Instant;
use sql::Param;
use sql::devices::{self as statements, DeviceKey};
use store::{
    AuthorityRecord, CertificateRecord, DeviceClassRecord, DeviceRecord, DeviceState, Devices, NewDevice, StoreError,
    TokenRefusal,
};

use crate::{Access, SqlRow, query_all, query_one};

fn text(value: &str) -> Param {
    Param::Text(value.to_owned())
}

fn optional_text(value: Option<&str>) -> Param {
    value.map_or(Param::Null, text)
}

fn optional_instant(value: Option<Instant>) -> Param {
    value.map_or(Param::Null, |at| Param::Integer(at.micros()))
}

fn instant(row: &dyn SqlRow, i: usize) -> Result<Instant, StoreError> {
    Ok(Instant::from_micros(row.required_integer(i)?))
}

fn optional_instant_of(row: &dyn SqlRow, i: usize) -> Result<Option<Instant>, StoreError> {
    Ok(row.integer(i)?.map(Instant::from_micros))
}

fn class_of(row: &dyn SqlRow) -> Result<DeviceClassRecord, StoreError> {
    Ok(DeviceClassRecord {
        id: row.required_integer(0)?,
        manufacturer: row.required_text(1)?,
        model: row.required_text(2)?,
        hardware_version: row.required_text(3)?,
        support_until: optional_instant_of(row, 4)?,
        vulnerability_contact: row.text(5)?,
        sensing: row.required_text(6)?,
        mud_url: row.text(7)?,
        update_mechanism: row.text(8)?,
        firmware: row.required_text(9)?,
        created_at: instant(row, 10)?,
        mud: row.text(11)?,
    })
}

fn device_of(row: &dyn SqlRow) -> Result<DeviceRecord, StoreError> {
    let state = row.required_text(5)?;
    Ok(DeviceRecord {
        id: row.required_integer(0)?,
        urn: row.required_text(1)?,
        project: row.required_integer(2)?,
        class: row.required_integer(3)?,
        thing: row.integer(4)?,
        state: DeviceState::parse(&state)
            .ok_or_else(|| StoreError::Database(format!("unknown device state `{state}` in the database").into()))?,
        state_reason: row.required_text(6)?,
        state_changed_at: instant(row, 7)?,
        firmware_version: row.text(8)?,
        secret_hash: row.text(9)?,
        password_findings: row.text(10)?,
        preregistered_key: row.text(11)?,
        report: row.text(12)?,
        created_at: instant(row, 13)?,
    })
}

fn certificate_of(row: &dyn SqlRow) -> Result<CertificateRecord, StoreError> {
    Ok(CertificateRecord {
        id: row.required_integer(0)?,
        device: row.required_integer(1)?,
        serial: row.required_text(2)?,
        fingerprint: row.required_text(3)?,
        key_fingerprint: row.required_text(4)?,
        not_before: instant(row, 5)?,
        not_after: instant(row, 6)?,
        issued_at: instant(row, 7)?,
        revoked_at: optional_instant_of(row, 8)?,
        revocation_reason: row.text(9)?,
        pem: row.required_text(10)?,
    })
}

impl Access<'_> {
    fn device_where(&self, key: DeviceKey, value: Param) -> Result<Vec<DeviceRecord>, StoreError> {
        query_all(self.conn, &statements::device_by(self.dialect, key), &[value], device_of)
    }

    fn inserted_id(&self, sql_text: &str, params: &[Param]) -> Result<i64, StoreError> {
        query_one(self.conn, sql_text, params, |row| row.required_integer(0))?
            .ok_or_else(|| StoreError::Database("an insert returned no id".into()))
    }
}

impl Devices for Access<'_> {
    fn insert_device_class(&mut self, class: &DeviceClassRecord) -> Result<i64, StoreError> {
        let params = [
            text(&class.manufacturer),
            text(&class.model),
            text(&class.hardware_version),
            optional_instant(class.support_until),
            optional_text(class.vulnerability_contact.as_deref()),
            text(&class.sensing),
            optional_text(class.mud_url.as_deref()),
            optional_text(class.update_mechanism.as_deref()),
            text(&class.firmware),
            Param::Integer(class.created_at.micros()),
            optional_text(class.mud.as_deref()),
        ];
        self.inserted_id(&statements::insert_class(self.dialect), &params)
    }

    fn device_class(&mut self, id: i64) -> Result<Option<DeviceClassRecord>, StoreError> {
        query_one(self.conn, &statements::class_by_id(self.dialect), &[Param::Integer(id)], class_of)
    }

    fn device_classes(&mut self) -> Result<Vec<DeviceClassRecord>, StoreError> {
        query_all(self.conn, &statements::classes(), &[], class_of)
    }

    fn insert_device(&mut self, device: &NewDevice<'_>) -> Result<i64, StoreError> {
        let params = [
            text(device.urn),
            Param::Integer(device.project),
            Param::Integer(device.class),
            device.thing.map_or(Param::Null, Param::Integer),
            optional_text(device.firmware_version),
            optional_text(device.preregistered_key),
            Param::Integer(Instant::now().micros()),
        ];
        self.inserted_id(&statements::insert_device(self.dialect), &params)
    }

    fn device_by_urn(&mut self, urn: &str) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self.device_where(DeviceKey::Urn, text(urn))?.into_iter().next())
    }

    fn device(&mut self, id: i64) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self.device_where(DeviceKey::Id, Param::Integer(id))?.into_iter().next())
    }

    fn devices(&mut self, project: Option<::access::ProjectId>) -> Result<Vec<DeviceRecord>, StoreError> {
        let params = [project.map_or(Param::Null, Param::Integer)];
        query_all(self.conn, &statements::devices(self.dialect), &params, device_of)
    }

    fn devices_of_thing(&mut self, thing: i64) -> Result<Vec<DeviceRecord>, StoreError> {
        self.device_where(DeviceKey::Thing, Param::Integer(thing))
    }

    fn set_device_state(
        &mut self,
        id: i64,
        state: DeviceState,
        reason: &str,
        report: Option<&str>,
    ) -> Result<(), StoreError> {
        let params = [
            Param::Integer(id),
            text(state.name()),
            text(reason),
            Param::Integer(Instant::now().micros()),
            optional_text(report),
        ];
        self.conn.execute(&statements::set_state(self.dialect), &params)?;
        Ok(())
    }

    fn set_device_secret(&mut self, id: i64, hash: Option<&str>, findings: Option<&str>) -> Result<(), StoreError> {
        let params = [Param::Integer(id), optional_text(hash), optional_text(findings)];
        self.conn.execute(&statements::set_secret(self.dialect), &params)?;
        Ok(())
    }

    fn device_by_preregistered_key(&mut self, fingerprint: &str) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self.device_where(DeviceKey::PreregisteredKey, text(fingerprint))?.into_iter().next())
    }

    fn device_by_secret(&mut self, hash: &str) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self.device_where(DeviceKey::Secret, text(hash))?.into_iter().next())
    }

    fn set_device_firmware(&mut self, id: i64, version: Option<&str>) -> Result<(), StoreError> {
        let params = [Param::Integer(id), optional_text(version)];
        self.conn.execute(&statements::set_firmware(self.dialect), &params)?;
        Ok(())
    }

    fn insert_enrollment_token(&mut self, device: i64, hash: &str, expires_at: Instant) -> Result<i64, StoreError> {
        let params = [
            Param::Integer(device),
            text(hash),
            Param::Integer(Instant::now().micros()),
            Param::Integer(expires_at.micros()),
        ];
        self.inserted_id(&statements::insert_token(self.dialect), &params)
    }

    fn take_enrollment_token(&mut self, hash: &str, now: Instant) -> Result<Result<i64, TokenRefusal>, StoreError> {
        let found = query_one(self.conn, &statements::token_by_hash(self.dialect), &[text(hash)], |row| {
            Ok((row.required_integer(0)?, row.required_integer(1)?, row.required_integer(2)?, row.integer(3)?))
        })?;
        let Some((id, device, expires_at, used_at)) = found else { return Ok(Err(TokenRefusal::Unknown)) };
        if used_at.is_some() {
            return Ok(Err(TokenRefusal::Used));
        }
        if expires_at <= now.micros() {
            return Ok(Err(TokenRefusal::Expired));
        }
        // The condition on `used_at` makes the use single even when two writers race for it.
        let params = [Param::Integer(id), Param::Integer(now.micros())];
        if self.conn.execute(&statements::use_token(self.dialect), &params)? == 0 {
            return Ok(Err(TokenRefusal::Used));
        }
        Ok(Ok(device))
    }

    fn void_enrollment_tokens(&mut self, device: i64, now: Instant) -> Result<(), StoreError> {
        let params = [Param::Integer(device), Param::Integer(now.micros())];
        self.conn.execute(&statements::void_tokens(self.dialect), &params)?;
        Ok(())
    }

    fn insert_certificate(&mut self, certificate: &CertificateRecord) -> Result<i64, StoreError> {
        let params = [
            Param::Integer(certificate.device),
            text(&certificate.serial),
            text(&certificate.fingerprint),
            text(&certificate.key_fingerprint),
            Param::Integer(certificate.not_before.micros()),
            Param::Integer(certificate.not_after.micros()),
            Param::Integer(certificate.issued_at.micros()),
            optional_instant(certificate.revoked_at),
            optional_text(certificate.revocation_reason.as_deref()),
            text(&certificate.pem),
        ];
        self.inserted_id(&statements::insert_certificate(self.dialect), &params)
    }

    fn certificate_by_serial(&mut self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        query_one(self.conn, &statements::certificate_by_serial(self.dialect), &[text(serial)], certificate_of)
    }

    fn certificates_of(&mut self, device: i64) -> Result<Vec<CertificateRecord>, StoreError> {
        query_all(self.conn, &statements::certificates_of(self.dialect), &[Param::Integer(device)], certificate_of)
    }

    fn devices_with_key(&mut self, key_fingerprint: &str, device: i64) -> Result<Vec<i64>, StoreError> {
        let params = [text(key_fingerprint), Param::Integer(device)];
        query_all(self.conn, &statements::devices_with_key(self.dialect), &params, |row| row.required_integer(0))
    }

    fn revoke_certificate(&mut self, serial: &str, at: Instant, reason: &str) -> Result<bool, StoreError> {
        let params = [text(serial), Param::Integer(at.micros()), text(reason)];
        Ok(self.conn.execute(&statements::revoke_certificate(self.dialect), &params)? > 0)
    }

    fn revoked_certificates(&mut self, now: Instant) -> Result<Vec<(String, Instant)>, StoreError> {
        let params = [Param::Integer(now.micros())];
        query_all(self.conn, &statements::revoked_certificates(self.dialect), &params, |row| {
            Ok((row.required_text(0)?, instant(row, 1)?))
        })
    }

    fn authority(&mut self) -> Result<Option<AuthorityRecord>, StoreError> {
        query_one(self.conn, statements::authority(), &[], |row| {
            Ok(AuthorityRecord {
                chain_pem: row.required_text(0)?,
                sealed_key: row.required_text(1)?,
                crl_number: row.required_integer(2)?,
            })
        })
    }

    fn insert_authority(&mut self, authority: &AuthorityRecord) -> Result<bool, StoreError> {
        let params = [
            text(&authority.chain_pem),
            text(&authority.sealed_key),
            Param::Integer(authority.crl_number),
            Param::Integer(Instant::now().micros()),
        ];
        Ok(self.conn.execute(&statements::insert_authority(self.dialect), &params)? > 0)
    }

    fn next_crl_number(&mut self) -> Result<i64, StoreError> {
        query_one(self.conn, statements::next_crl_number(), &[], |row| row.required_integer(0))?
            .ok_or_else(|| StoreError::Database("there is no certificate authority to number a CRL of".into()))
    }

    fn feed(&mut self, id: i64, multi: bool) -> Result<Option<store::Feed>, StoreError> {
        let rows = query_all(self.conn, &statements::feed(self.dialect, multi), &[Param::Integer(id)], |row| {
            Ok((row.integer(0)?, row.text(1)?))
        })?;
        let Some((thing, _)) = rows.first() else { return Ok(None) };
        let thing = *thing;
        Ok(Some((thing, rows.into_iter().filter_map(|(_, definition)| definition).collect())))
    }
}
