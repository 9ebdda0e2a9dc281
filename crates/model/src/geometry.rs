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

impl Geometry {
    /// Reads a GeoJSON geometry, or the geometry of a GeoJSON Feature.
    pub fn from_geojson(value: &serde_json::Value) -> Result<Geometry, GeometryError> {
        let value = match value.get("type").and_then(|t| t.as_str()) {
            Some("Feature") => value.get("geometry").unwrap_or(&serde_json::Value::Null),
            _ => value,
        };
        let geometry = serde_json::from_value::<geojson::Geometry>(value.clone())
            .map_err(|e| GeometryError::GeoJson(e.to_string()))?;
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
