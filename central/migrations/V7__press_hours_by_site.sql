-- One site's hours across a long span (the web view's year of weeks, a
-- site's hour x weekday, a site's e-mailed report) read by site first:
-- press_hours' own key starts with the hour, for reports across sites.
CREATE INDEX press_hours_by_site ON press_hours (site, hour);
