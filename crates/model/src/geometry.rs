//! Geometry values: GeoJSON from entities, WKT from `$filter` literals, and the spatial
//! relations and measures of the SensorThings filter functions, computed in planar
//! coordinates (as PostGIS does for `geometry`).

use geo::{BoundingRect, Relate};

/// The `encodingType` values whose location or feature is GeoJSON.
pub const GEOJSON_ENCODINGS: [&str; 2] = ["application/geo+json", "application/vnd.geo+json"];

/// A parsed geometry.
#[derive(Clone, Debug, PartialEq)]
pub struct Geometry(geo::Geometry<f64>);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    #[error("not a GeoJSON geometry: {0}")]
    GeoJson(String),
    #[error("not a WKT geometry: {0}")]
    Wkt(String),
    #[error("`{0}` is not a DE-9IM pattern of nine characters from T, F, *, 0, 1, 2")]
    Pattern(String),
}

/// RFC 7946 §3.1 beyond what the `geojson` crate checks: every position has two or more
/// numbers (the crate's conversion panics on a short one inside a line or polygon); and when
/// `strict`, a LineString two or more positions, and a linear ring four or more, the last equal
/// to the first.
fn check_geojson(value: &geojson::GeometryValue, strict: bool) -> Result<(), String> {
    use geojson::GeometryValue as V;
    fn position(p: &geojson::Position) -> Result<(), String> {
        match p.len() {
            0 | 1 => Err(format!("a position must hold two or more numbers (this one holds {})", p.len())),
            _ => Ok(()),
        }
    }
    let line = |positions: &[geojson::Position]| -> Result<(), String> {
        positions.iter().try_for_each(position)?;
        match positions.len() {
            1 if strict => Err("a LineString must hold two or more positions (this one holds 1)".into()),
            _ => Ok(()),
        }
    };
    let polygon = |rings: &[Vec<geojson::Position>]| -> Result<(), String> {
        for ring in rings {
            ring.iter().try_for_each(position)?;
            if !strict {
                continue;
            }
            if ring.len() < 4 {
                return Err(format!("a linear ring must hold four or more positions (this one holds {})", ring.len()));
            }
            if ring.first().map(geojson::Position::as_slice) != ring.last().map(geojson::Position::as_slice) {
                return Err("a linear ring must end with the position it starts with".into());
            }
        }
        Ok(())
    };
    match value {
        V::Point { coordinates } => position(coordinates),
        V::MultiPoint { coordinates } => coordinates.iter().try_for_each(position),
        V::LineString { coordinates } => line(coordinates),
        V::MultiLineString { coordinates } => coordinates.iter().try_for_each(|l| line(l)),
        V::Polygon { coordinates } => polygon(coordinates),
        V::MultiPolygon { coordinates } => coordinates.iter().try_for_each(|p| polygon(p)),
        V::GeometryCollection { geometries } => geometries.iter().try_for_each(|g| check_geojson(&g.value, strict)),
    }
}

/// The same shapes for WKT (OGC 06-103r4 §6.1.7, §6.1.11), once converted: a LineString of two
/// or more points, and rings of four or more (the conversion closes an open ring, so three
/// distinct points at least).
fn check_wkt(geometry: &geo::Geometry<f64>) -> Result<(), String> {
    fn line(l: &geo::LineString<f64>) -> Result<(), String> {
        match l.0.len() {
            1 => Err("a LINESTRING must hold two or more points (this one holds 1)".into()),
            _ => Ok(()),
        }
    }
    fn polygon(p: &geo::Polygon<f64>) -> Result<(), String> {
        let empty = p.exterior().0.is_empty() && p.interiors().is_empty();
        for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
            if !empty && ring.0.len() < 4 {
                return Err(format!(
                    "a POLYGON's ring must hold four or more points, the last equal to the first (this one holds {})",
                    ring.0.len()
                ));
            }
        }
        Ok(())
    }
    match geometry {
        geo::Geometry::LineString(l) => line(l),
        geo::Geometry::MultiLineString(m) => m.0.iter().try_for_each(line),
        geo::Geometry::Polygon(p) => polygon(p),
        geo::Geometry::MultiPolygon(m) => m.0.iter().try_for_each(polygon),
        geo::Geometry::GeometryCollection(c) => c.0.iter().try_for_each(check_wkt),
        _ => Ok(()),
    }
}

impl Geometry {
    /// Reads a GeoJSON geometry, or the geometry of a GeoJSON Feature, as it is stored: an open
    /// ring or a LineString of one position, which earlier versions took, still reads (a ring
    /// is closed). New entities are checked with [`Geometry::from_geojson_checked`].
    pub fn from_geojson(value: &serde_json::Value) -> Result<Geometry, GeometryError> {
        Geometry::read_geojson(value, false)
    }

    /// Reads a GeoJSON geometry as [`Geometry::from_geojson`] does, refusing what RFC 7946 §3.1
    /// forbids: a LineString of fewer than two positions, a linear ring of fewer than four or
    /// not closed.
    pub fn from_geojson_checked(value: &serde_json::Value) -> Result<Geometry, GeometryError> {
        Geometry::read_geojson(value, true)
    }

    fn read_geojson(value: &serde_json::Value, strict: bool) -> Result<Geometry, GeometryError> {
        let value = match value.get("type").and_then(|t| t.as_str()) {
            Some("Feature") => value.get("geometry").unwrap_or(&serde_json::Value::Null),
            _ => value,
        };
        let geometry = serde_json::from_value::<geojson::Geometry>(value.clone())
            .map_err(|e| GeometryError::GeoJson(e.to_string()))?;
        check_geojson(&geometry.value, strict).map_err(GeometryError::GeoJson)?;
        let geometry: geo::Geometry<f64> =
            geometry.try_into().map_err(|e: geojson::Error| GeometryError::GeoJson(e.to_string()))?;
        Ok(Geometry(geometry))
    }

    /// Reads well-known text, e.g. `POINT(30 10)`.
    pub fn from_wkt(text: &str) -> Result<Geometry, GeometryError> {
        use std::str::FromStr;
        let parsed = wkt::Wkt::<f64>::from_str(text).map_err(|e| GeometryError::Wkt(e.to_string()))?;
        let geometry: geo::Geometry<f64> =
            parsed.try_into().map_err(|e: wkt::conversion::Error| GeometryError::Wkt(e.to_string()))?;
        check_wkt(&geometry).map_err(GeometryError::Wkt)?;
        Ok(Geometry(geometry))
    }

    /// Writes well-known text, e.g. `POINT(30 10)`, that [`Geometry::from_wkt`] reads back as an
    /// equal geometry: coordinates are written in their shortest exact decimal form.
    pub fn to_wkt(&self) -> String {
        use wkt::ToWkt;
        self.0.wkt_string()
    }

    /// Reads GeoJSON text or WKT, whichever `text` is.
    pub fn parse(text: &str) -> Result<Geometry, GeometryError> {
        if text.trim_start().starts_with('{') {
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| GeometryError::GeoJson(e.to_string()))?;
            Geometry::from_geojson(&value)
        } else {
            Geometry::from_wkt(text)
        }
    }

    pub fn to_geojson(&self) -> serde_json::Value {
        let geometry = geojson::Geometry::from(&self.0);
        serde_json::to_value(geometry).unwrap_or(serde_json::Value::Null)
    }

    pub fn intersects(&self, other: &Geometry) -> bool {
        self.0.relate(&other.0).is_intersects()
    }

    pub fn disjoint(&self, other: &Geometry) -> bool {
        self.0.relate(&other.0).is_disjoint()
    }

    pub fn within(&self, other: &Geometry) -> bool {
        self.0.relate(&other.0).is_within()
    }

    pub fn contains(&self, other: &Geometry) -> bool {
        self.0.relate(&other.0).is_contains()
    }

    pub fn touches(&self, other: &Geometry) -> bool {
        self.0.relate(&other.0).is_touches()
    }

    pub fn crosses(&self, other: &Geometry) -> bool {
        self.0.relate(&other.0).is_crosses()
    }

    pub fn overlaps(&self, other: &Geometry) -> bool {
        self.0.relate(&other.0).is_overlaps()
    }

    pub fn equals(&self, other: &Geometry) -> bool {
        self.0.relate(&other.0).is_equal_topo()
    }

    /// Whether the DE-9IM matrix of the two matches `pattern`, e.g. `T*F**F***`.
    pub fn relate(&self, other: &Geometry, pattern: &str) -> Result<bool, GeometryError> {
        let valid = pattern.len() == 9 && pattern.chars().all(|c| "TF*012tf".contains(c));
        if !valid {
            return Err(GeometryError::Pattern(pattern.to_owned()));
        }
        self.0
            .relate(&other.0)
            .matches(&pattern.to_ascii_uppercase())
            .map_err(|_| GeometryError::Pattern(pattern.to_owned()))
    }

    /// The planar distance between the closest points of the two.
    pub fn distance(&self, other: &Geometry) -> f64 {
        use geo::{Distance, Euclidean};
        Euclidean.distance(&self.0, &other.0)
    }

    /// The planar length of the lines in the geometry (0 for points; perimeter for polygons
    /// is not a length in OGC terms, so polygons also give 0).
    pub fn length(&self) -> f64 {
        use geo::{Euclidean, Length};
        fn of(g: &geo::Geometry<f64>) -> f64 {
            match g {
                geo::Geometry::Line(l) => Euclidean.length(l),
                geo::Geometry::LineString(l) => Euclidean.length(l),
                geo::Geometry::MultiLineString(l) => Euclidean.length(l),
                geo::Geometry::GeometryCollection(c) => c.iter().map(of).sum(),
                _ => 0.0,
            }
        }
        of(&self.0)
    }

    /// The bounding box as a polygon (a point for a point), used for `observedArea`.
    pub fn envelope(&self) -> Option<Geometry> {
        let rect = self.0.bounding_rect()?;
        if rect.min() == rect.max() {
            return Some(Geometry(geo::Geometry::Point(rect.min().into())));
        }
        Some(Geometry(geo::Geometry::Polygon(rect.to_polygon())))
    }

    /// The bounding box of both, as [`Geometry::envelope`] gives it.
    pub fn envelope_union(&self, other: &Geometry) -> Option<Geometry> {
        let collection =
            geo::Geometry::GeometryCollection(geo::GeometryCollection(vec![self.0.clone(), other.0.clone()]));
        Geometry(collection).envelope()
    }
}
